// Statistics for the analyses of editing sweeps (Hase et al. 2023, "Does Localization Inform
// Editing?"): does the tracing effect predict edit success once the edit layer is known?
//
//   descriptive   mean, variance, std, sem, quantile, seeded (cluster) bootstrap confidence intervals
//   outliers      Tukey's fences (used by Layer Gradient Analysis to drop outlying layers)
//   tests         Pearson correlation and the paired t-test (with its t interval and Cohen's d_z),
//                 two-sided p-values
//   verdicts      Holm's correction, Cohen's f^2, and the study's one verdict rule (corrected test and
//                 minimum effect size must agree)
//   regression    ordinary least squares on a design matrix built from continuous and categorical
//                 (one-hot) predictors and their interactions; R^2, adjusted R^2, and the nested-model
//                 F-test ("does adding the tracing effect explain more variance than the layer alone?");
//                 the three R^2 of Hase et al. in closed form from weighted sums (groupedLineR2), fast
//                 enough to bootstrap
//
// The p-values need the Student t and F distributions, both written through the regularized
// incomplete beta function I_x(a, b), computed with its continued fraction (below).
// Everything is plain float64 TypeScript; the inputs are at most a few hundred thousand numbers.
import { mulberry32 } from "../../engine/random.ts";

// ------------------------------------------------------------------------------------------------
// Descriptive statistics

function requireValues(what: string, xs: readonly number[], atLeast: number): void {
  if (xs.length < atLeast) throw new Error(`${what}: needs at least ${atLeast} values, got ${xs.length}`);
  xs.forEach((x, i) => {
    if (!Number.isFinite(x)) throw new Error(`${what}: value ${i} is ${x}, not a finite number`);
  });
}

/** Arithmetic mean of at least one finite value. */
export function mean(xs: readonly number[]): number {
  requireValues("mean", xs, 1);
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** Unbiased sample variance (divides by n - 1). */
export function variance(xs: readonly number[]): number {
  requireValues("variance", xs, 2);
  const m = mean(xs);
  let s = 0;
  for (const x of xs) s += (x - m) ** 2;
  return s / (xs.length - 1);
}

/** Sample standard deviation (n - 1 in the denominator). */
export function std(xs: readonly number[]): number {
  return Math.sqrt(variance(xs));
}

/** Standard error of the mean: std / sqrt(n). */
export function sem(xs: readonly number[]): number {
  return std(xs) / Math.sqrt(xs.length);
}

/** The q-quantile with linear interpolation between order statistics (numpy's default, R's type 7):
 *  position h = (n - 1) q in the sorted values. */
export function quantile(xs: readonly number[], q: number): number {
  requireValues("quantile", xs, 1);
  return sortedQuantile(Float64Array.from(xs).sort(), q);
}

/** quantile() of values already sorted ascending (a bootstrap takes two quantiles of one sort). */
function sortedQuantile(sorted: Float64Array, q: number): number {
  if (!(q >= 0 && q <= 1)) throw new Error(`quantile: q must be in [0, 1], got ${q}`);
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h), hi = Math.ceil(h);
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
}

/** The median: the 0.5-quantile (the mean of the two middle values for an even count). */
export function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}

/** Settings of the percentile bootstrap (bootstrapUnits and its callers). */
export interface BootstrapOptions {
  /** Number of resamples (default 2000). */
  resamples?: number;
  /** Coverage of the interval (default 0.95). */
  level?: number;
  /** PRNG seed (default 0): the same seed gives the same interval. */
  seed?: number;
}

/** A point estimate with its (bootstrap or t) confidence interval. */
export interface ConfidenceInterval {
  /** The statistic of the original sample (every unit once). */
  estimate: number;
  /** Lower end of the interval: the (1 - level) / 2 quantile. */
  lower: number;
  /** Upper end of the interval: the (1 + level) / 2 quantile. */
  upper: number;
  /** Coverage of the interval, e.g. 0.95. */
  level: number;
}

/** Resamples whose statistic is undefined (NaN: e.g. a resample with one distinct value; or infinite:
 *  Cohen's f^2 of a perfect fit) are left out; beyond this share of them the interval is undefined too. */
const MAX_UNDEFINED_RESAMPLES = 0.1;

/**
 * Percentile bootstrap over n units (facts) of k statistics at once: each resample draws n units with
 * replacement and passes their counts (counts[i] = times unit i was drawn, summing to n) to
 * `statistic`, which returns k numbers; the interval of statistic j is the (1-level)/2 and
 * (1+level)/2 quantiles of its resampled values. The estimate is the statistic of every unit once.
 * Resampling units rather than rows keeps a fact's rows (one per layer) together: the cluster
 * bootstrap, as a fact's edits at different layers are not independent observations.
 */
export function bootstrapUnits(
  n: number,
  statistic: (counts: Float64Array) => number[],
  o: BootstrapOptions = {},
): ConfidenceInterval[] {
  const resamples = o.resamples ?? 2000;
  const level = o.level ?? 0.95;
  if (!Number.isInteger(n) || n < 1) throw new Error(`bootstrap: needs at least 1 unit, got ${n}`);
  if (!Number.isInteger(resamples) || resamples < 1) {
    throw new Error(`bootstrap: resamples must be a positive integer, got ${resamples}`);
  }
  if (!(level > 0 && level < 1)) throw new Error(`bootstrap: level must be in (0, 1), got ${level}`);
  const estimate = statistic(new Float64Array(n).fill(1));
  const draws: number[][] = estimate.map(() => []);
  forEachResample(n, resamples, o.seed ?? 0, (counts) =>
    statistic(counts).forEach((v, j) => {
      if (Number.isFinite(v)) draws[j].push(v);
    }));
  return estimate.map((e, j) => {
    const xs = draws[j];
    const defined = xs.length >= (1 - MAX_UNDEFINED_RESAMPLES) * resamples && Number.isFinite(e);
    const sorted = defined ? Float64Array.from(xs).sort() : null;
    return {
      estimate: e,
      lower: sorted ? sortedQuantile(sorted, (1 - level) / 2) : NaN,
      upper: sorted ? sortedQuantile(sorted, (1 + level) / 2) : NaN,
      level,
    };
  });
}

/** Resample tables kept by forEachResample (a report asks for a few sizes thousands of times), and the
 *  largest kept (values; 32 MB). */
const COUNT_TABLES_KEPT = 8;
const COUNT_TABLE_VALUES = 4_000_000;
const countTables = new Map<string, Float64Array>();

/**
 * Calls `use` with the bootstrap's draws of n units in each of `resamples` resamples from a PRNG seeded
 * `seed`: counts[i] = how often unit i was drawn (read-only for `use`). The draws depend on nothing else,
 * so the tables of the last few (n, resamples, seed) are kept: a report's thousands of intervals over
 * the same facts draw once (the draws were most of a mean's interval). Tables over COUNT_TABLE_VALUES are
 * drawn resample by resample, the same numbers.
 */
function forEachResample(
  n: number,
  resamples: number,
  seed: number,
  use: (counts: Float64Array) => void,
): void {
  const draw = (random: () => number, counts: Float64Array) => {
    for (let i = 0; i < n; i++) counts[Math.floor(random() * n)]++;
  };
  if (n * resamples > COUNT_TABLE_VALUES) {
    const random = mulberry32(seed), counts = new Float64Array(n);
    for (let r = 0; r < resamples; r++) {
      counts.fill(0);
      draw(random, counts);
      use(counts);
    }
    return;
  }
  const key = `${n} ${resamples} ${seed}`;
  let table = countTables.get(key);
  if (table) {
    countTables.delete(key); // kept as the most recently used, last
  } else {
    table = new Float64Array(resamples * n);
    const random = mulberry32(seed);
    for (let r = 0; r < resamples; r++) draw(random, table.subarray(r * n, (r + 1) * n));
    if (countTables.size >= COUNT_TABLES_KEPT) countTables.delete(countTables.keys().next().value!);
  }
  countTables.set(key, table);
  for (let r = 0; r < resamples; r++) use(table.subarray(r * n, (r + 1) * n));
}

/** Percentile bootstrap of one statistic of a sample of independent values (default: the mean). */
export function bootstrapCI(
  xs: readonly number[],
  o: BootstrapOptions & { statistic?: (xs: number[]) => number } = {},
): ConfidenceInterval {
  requireValues("bootstrapCI", xs, 1);
  if (!o.statistic) {
    // The mean of the resample [xs[0] x counts[0], xs[1] x counts[1], ...], summed in that order as mean()
    // sums it (the same bits), without building the resample.
    const values = Float64Array.from(xs), n = values.length;
    return bootstrapUnits(n, (counts) => {
      let sum = 0;
      for (let i = 0; i < n; i++) {
        const x = values[i];
        for (let k = counts[i]; k > 0; k--) sum += x;
      }
      return [sum / n];
    }, o)[0];
  }
  const statistic = o.statistic;
  const sample: number[] = [];
  return bootstrapUnits(xs.length, (counts) => {
    sample.length = 0;
    counts.forEach((c, i) => {
      for (let k = 0; k < c; k++) sample.push(xs[i]);
    });
    return [statistic(sample)];
  }, o)[0];
}

/** The weighted mean of xs with weights w (bootstrap counts); NaN when the weights are all 0. */
export function weightedMean(xs: readonly number[], w: ArrayLike<number>): number {
  let s = 0, n = 0;
  for (let i = 0; i < xs.length; i++) [s, n] = [s + w[i] * xs[i], n + w[i]];
  return n > 0 ? s / n : NaN;
}

/** Tukey's fences of a sample: its quartiles and which values fall outside q1 - k iqr .. q3 + k iqr. */
export interface TukeyFences {
  /** First quartile (0.25 quantile). */
  q1: number;
  /** Third quartile (0.75 quantile). */
  q3: number;
  /** Interquartile range q3 - q1. */
  iqr: number;
  /** Lower fence q1 - k * iqr. */
  lower: number;
  /** Upper fence q3 + k * iqr. */
  upper: number;
  /** Indices of values outside [lower, upper]. */
  outliers: number[];
  /** Indices of values inside [lower, upper]. */
  inliers: number[];
}

/** Tukey's fences with quartiles by `quantile` (linear interpolation); k = 1.5 flags "outliers". */
export function tukeyFences(xs: readonly number[], k = 1.5): TukeyFences {
  requireValues("tukeyFences", xs, 1);
  if (!(k >= 0)) throw new Error(`tukeyFences: k must be >= 0, got ${k}`);
  const q1 = quantile(xs, 0.25), q3 = quantile(xs, 0.75);
  const iqr = q3 - q1;
  const lower = q1 - k * iqr, upper = q3 + k * iqr;
  const outliers: number[] = [], inliers: number[] = [];
  xs.forEach((x, i) => (x < lower || x > upper ? outliers : inliers).push(i));
  return { q1, q3, iqr, lower, upper, outliers, inliers };
}

// ------------------------------------------------------------------------------------------------
// Special functions and distributions

// Lanczos approximation (g = 7, 9 terms), accurate to ~1e-15 for x > 0.
const LANCZOS = [
  0.99999999999980993,
  676.5203681218851,
  -1259.1392167224028,
  771.32342877765313,
  -176.61502916214059,
  12.507343278686905,
  -0.13857109526572012,
  9.9843695780195716e-6,
  1.5056327351493116e-7,
];

/** ln Gamma(x) for x > 0. */
export function logGamma(x: number): number {
  if (!(x > 0)) throw new Error(`logGamma: x must be > 0, got ${x}`);
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x); // reflection
  const z = x - 1;
  let sum = LANCZOS[0];
  for (let i = 1; i < LANCZOS.length; i++) sum += LANCZOS[i] / (z + i);
  const t = z + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(sum);
}

/** Continued fraction of I_x(a, b) (modified Lentz), valid and fast for x < (a + 1) / (a + b + 2):
 *  I_x(a,b) = x^a (1-x)^b / (a B(a,b)) * 1/(1+ d1/(1+ d2/(1+ ...))) with
 *  d_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)),  d_{2m} = m(b-m) x / ((a+2m-1)(a+2m)). */
function betaContinuedFraction(x: number, a: number, b: number): number {
  const TINY = 1e-300, EPS = 1e-16, MAX_ITERATIONS = 10000;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < TINY) d = TINY;
  d = 1 / d;
  let f = d;
  for (let m = 1; m <= MAX_ITERATIONS; m++) {
    // even step: d_{2m}
    let num = (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m));
    d = 1 + num * d;
    if (Math.abs(d) < TINY) d = TINY;
    c = 1 + num / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    f *= d * c;
    // odd step: d_{2m+1}
    num = (-(a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 + num * d;
    if (Math.abs(d) < TINY) d = TINY;
    c = 1 + num / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    const delta = d * c;
    f *= delta;
    if (Math.abs(delta - 1) < EPS) return f;
  }
  throw new Error(`incomplete beta: continued fraction did not converge for x=${x}, a=${a}, b=${b}`);
}

/** The regularized incomplete beta function I_x(a, b) = B(x; a, b) / B(a, b), for a, b > 0, x in [0, 1]. */
export function regularizedIncompleteBeta(x: number, a: number, b: number): number {
  if (!(a > 0 && b > 0)) throw new Error(`incomplete beta: a and b must be > 0, got a=${a}, b=${b}`);
  if (!(x >= 0 && x <= 1)) throw new Error(`incomplete beta: x must be in [0, 1], got ${x}`);
  if (x === 0 || x === 1) return x;
  const logFront = a * Math.log(x) + b * Math.log1p(-x) - (logGamma(a) + logGamma(b) - logGamma(a + b));
  // The continued fraction converges quickly only below the mean-ish point; above it use
  // the symmetry I_x(a, b) = 1 - I_{1-x}(b, a).
  if (x < (a + 1) / (a + b + 2)) return (Math.exp(logFront) * betaContinuedFraction(x, a, b)) / a;
  return 1 - (Math.exp(logFront) * betaContinuedFraction(1 - x, b, a)) / b;
}

/** P(T <= t) for Student's t with df degrees of freedom. */
export function studentTCdf(t: number, df: number): number {
  if (!(df > 0)) throw new Error(`Student t: df must be > 0, got ${df}`);
  if (Number.isNaN(t)) return NaN;
  if (!Number.isFinite(t)) return t > 0 ? 1 : 0;
  // P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2)
  const tail = 0.5 * regularizedIncompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t > 0 ? 1 - tail : tail;
}

/** Two-sided p-value P(|T| >= |t|) (computed directly, so tiny p-values keep their precision). */
export function studentTTwoSidedP(t: number, df: number): number {
  if (!(df > 0)) throw new Error(`Student t: df must be > 0, got ${df}`);
  if (Number.isNaN(t)) return NaN;
  if (!Number.isFinite(t)) return 0;
  return regularizedIncompleteBeta(df / (df + t * t), df / 2, 0.5);
}

/** P(F <= f) for the F distribution with (d1, d2) degrees of freedom. */
export function fCdf(f: number, d1: number, d2: number): number {
  if (!(d1 > 0 && d2 > 0)) throw new Error(`F distribution: d1 and d2 must be > 0, got ${d1}, ${d2}`);
  if (Number.isNaN(f)) return NaN;
  if (f <= 0) return 0;
  if (!Number.isFinite(f)) return 1;
  return regularizedIncompleteBeta((d1 * f) / (d1 * f + d2), d1 / 2, d2 / 2);
}

/** P(F >= f), the F-test p-value (computed directly, not as 1 - cdf). */
export function fSurvival(f: number, d1: number, d2: number): number {
  if (!(d1 > 0 && d2 > 0)) throw new Error(`F distribution: d1 and d2 must be > 0, got ${d1}, ${d2}`);
  if (Number.isNaN(f)) return NaN;
  if (f <= 0) return 1;
  if (!Number.isFinite(f)) return 0;
  return regularizedIncompleteBeta(d2 / (d2 + d1 * f), d2 / 2, d1 / 2);
}

/** The p-quantile of Student's t with df degrees of freedom: the t with studentTCdf(t, df) = p, by
 *  bisection on the cdf (monotone; 200 halvings reach float64 resolution from any bracket found). */
export function studentTQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`Student t quantile: p must be in (0, 1), got ${p}`);
  if (!(df > 0)) throw new Error(`Student t: df must be > 0, got ${df}`);
  let lo = -1, hi = 1;
  while (studentTCdf(lo, df) > p) lo *= 2;
  while (studentTCdf(hi, df) < p) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-15 * Math.max(1, Math.abs(lo)); i++) {
    const mid = (lo + hi) / 2;
    if (studentTCdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

// ------------------------------------------------------------------------------------------------
// Tests

/** Pearson's r of paired samples with its t-test of r = 0. */
export interface Correlation {
  /** Pearson's correlation coefficient, in [-1, 1]. */
  r: number;
  /** Number of (x, y) pairs. */
  n: number;
  /** t = r sqrt((n-2)/(1-r^2)) (infinite when |r| = 1). */
  t: number;
  /** Degrees of freedom of t: n - 2. */
  df: number;
  /** Two-sided p-value of t. */
  p: number;
}

/** Pearson's correlation coefficient with the t-test of r = 0. */
export function pearson(x: readonly number[], y: readonly number[]): Correlation {
  if (x.length !== y.length) throw new Error(`pearson: x has ${x.length} values, y has ${y.length}`);
  requireValues("pearson x", x, 3);
  requireValues("pearson y", y, 3);
  const mx = mean(x), my = mean(y);
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < x.length; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  if (sxx === 0 || syy === 0) {
    throw new Error(`pearson: ${sxx === 0 ? "x" : "y"} is constant, so r is undefined`);
  }
  const r = Math.max(-1, Math.min(1, sxy / Math.sqrt(sxx * syy)));
  const df = x.length - 2;
  const t = Math.abs(r) === 1 ? Math.sign(r) * Infinity : r * Math.sqrt(df / (1 - r * r));
  return { r, n: x.length, t, df, p: studentTTwoSidedP(t, df) };
}

/** A paired t-test of mean(a - b) = 0 (pairedTTest). */
export interface TTest {
  /** mean(a - b). */
  meanDifference: number;
  /** t = mean(a - b) / (sd(a - b) / sqrt(n)). */
  t: number;
  /** Degrees of freedom: n - 1. */
  df: number;
  /** Two-sided p-value. */
  p: number;
  /** The 95% t interval of the mean difference, mean +- t_{0.975, n-1} sd / sqrt(n): its lower end. */
  lower: number;
  /** The upper end of that interval. */
  upper: number;
  /** Cohen's d_z = mean(a - b) / sd(a - b): the standardized effect size of paired samples. */
  dz: number;
}

/** Paired t-test of mean(a - b) = 0. */
export function pairedTTest(a: readonly number[], b: readonly number[]): TTest {
  if (a.length !== b.length) throw new Error(`pairedTTest: a has ${a.length} values, b has ${b.length}`);
  requireValues("pairedTTest a", a, 2);
  requireValues("pairedTTest b", b, 2);
  const diffs = a.map((x, i) => x - b[i]);
  const sd = std(diffs);
  if (sd === 0) throw new Error("pairedTTest: every difference is the same, so t is undefined");
  const m = mean(diffs);
  const se = sd / Math.sqrt(diffs.length);
  const df = diffs.length - 1;
  const half = studentTQuantile(0.975, df) * se;
  return {
    meanDifference: m,
    t: m / se,
    df,
    p: studentTTwoSidedP(m / se, df),
    lower: m - half,
    upper: m + half,
    dz: m / sd,
  };
}

// ------------------------------------------------------------------------------------------------
// Multiple comparisons, effect sizes and the verdict rule

/**
 * Holm's step-down adjustment (controls the family-wise error rate under any dependence between the
 * tests): with the m defined p-values sorted ascending, p_(i) becomes max_{j<=i} min(1, (m - j + 1) p_(j)).
 * Returned in the input's order; NaN p-values (tests that could not be made) stay NaN and do not count
 * in m.
 */
export function holm(pValues: readonly number[]): number[] {
  const order = pValues.map((p, i) => [p, i] as const).filter(([p]) => !Number.isNaN(p))
    .sort((a, b) => a[0] - b[0]);
  const m = order.length;
  const out = pValues.map(() => NaN);
  let running = 0;
  order.forEach(([p, i], rank) => {
    if (!(p >= 0 && p <= 1)) throw new Error(`holm: p-value ${i} is ${p}, not in [0, 1]`);
    running = Math.max(running, Math.min(1, (m - rank) * p));
    out[i] = running;
  });
  return out;
}

/** Cohen's f^2 of the predictors a full model adds to a reduced one: (R^2_full - R^2_reduced) / (1 - R^2_full). */
export function cohensF2(r2Reduced: number, r2Full: number): number {
  return (r2Full - r2Reduced) / (1 - r2Full);
}

/** The significance level of every corrected test. */
export const ALPHA = 0.05;

/** The smallest effects the report calls effects: Cohen's (1988) "small" for each effect size. */
export const MIN_EFFECT = {
  /** Cohen's f^2 of added predictors. */
  f2: 0.02,
  /** |Pearson r|. */
  r: 0.1,
  /** |Cohen's d_z| of a paired difference. */
  dz: 0.2,
} as const;

/** Outcome of the verdict rule for one test: see `verdict` and VERDICT_RULE. */
export type Verdict = "effect" | "no effect" | "n/a";

/**
 * The one verdict rule of the study: an effect exists only when its test, Holm-corrected within its
 * family, rejects at ALPHA and its effect size reaches the minimum (|effect| >= minimum). A significant
 * but tiny effect (many facts make anything significant) and a large but uncertain one are both "no
 * effect"; a test that could not be made is "n/a".
 */
export function verdict(pAdjusted: number, effect: number, minimum: number): Verdict {
  if (!Number.isFinite(pAdjusted) || !Number.isFinite(effect)) return "n/a";
  return pAdjusted < ALPHA && Math.abs(effect) >= minimum ? "effect" : "no effect";
}

/** The rule in words, for the report and the terminal. */
export const VERDICT_RULE: string =
  `An effect is reported only when its test, Holm-corrected within its family ` +
  `(one table or figure), has p < ${ALPHA} and its effect size reaches Cohen's "small" threshold ` +
  `(f² ≥ ${MIN_EFFECT.f2} for predictors added to a regression, |r| ≥ ${MIN_EFFECT.r} for a correlation, ` +
  `|d_z| ≥ ${MIN_EFFECT.dz} for a paired difference); otherwise "no effect". Intervals are 95% percentile ` +
  `bootstrap intervals over facts (seeded) unless stated.`;

// ------------------------------------------------------------------------------------------------
// Ordinary least squares

/** Which columns of a data table enter a regression, and how. */
export interface ModelSpec {
  /** Numeric predictors, one column each. */
  continuous?: string[];
  /** Categorical predictors: one-hot columns for every level but the first (the reference level). */
  categorical?: string[];
  /** Products of two predictors' columns, e.g. ["layer", "effect"]: a slope of effect per layer. */
  interactions?: [string, string][];
}

/** Column-oriented data: column name -> one value per row (every column the same length). */
export type DataTable = Record<string, readonly (number | string)[]>;

/** A regression's design matrix X with its column names (designMatrix). */
export interface DesignMatrix {
  /** n rows of p values; column 0 is the intercept. */
  X: number[][];
  /** Column names: "(intercept)", "effect", "layer=3", "layer=3:effect". */
  names: string[];
}

/** The sorted distinct values of a categorical column (numerically when all are numbers). */
function levelsOf(name: string, values: readonly (number | string)[]): (number | string)[] {
  const distinct = [...new Set(values)];
  const numbers = distinct.filter((v) => typeof v === "number").length;
  if (numbers > 0 && numbers < distinct.length) {
    throw new Error(`designMatrix: categorical column "${name}" mixes numbers and strings`);
  }
  return numbers > 0
    ? distinct.sort((a, b) => (a as number) - (b as number))
    : distinct.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Builds the design matrix [intercept | continuous | one-hot categoricals | interactions]. */
export function designMatrix(data: DataTable, spec: ModelSpec): DesignMatrix {
  const names = Object.keys(data);
  if (names.length === 0) throw new Error("designMatrix: the data table has no columns");
  const n = data[names[0]].length;
  const column = (name: string) => {
    const values = data[name];
    if (!values) throw new Error(`designMatrix: no column "${name}" (columns: ${names.join(", ")})`);
    if (values.length !== n) {
      throw new Error(`designMatrix: column "${name}" has ${values.length} values, "${names[0]}" has ${n}`);
    }
    return values;
  };
  // Each predictor becomes one or more named numeric columns.
  const blocks = new Map<string, { names: string[]; columns: number[][] }>();
  for (const name of spec.continuous ?? []) {
    const values = column(name);
    values.forEach((v, i) => {
      if (typeof v !== "number" || !Number.isFinite(v)) {
        throw new Error(
          `designMatrix: continuous column "${name}" row ${i} is ${JSON.stringify(v)}, not a finite number`,
        );
      }
    });
    blocks.set(name, { names: [name], columns: [values as number[]] });
  }
  for (const name of spec.categorical ?? []) {
    if (blocks.has(name)) throw new Error(`designMatrix: "${name}" is both continuous and categorical`);
    const values = column(name);
    const levels = levelsOf(name, values);
    if (levels.length < 2) {
      throw new Error(
        `designMatrix: categorical column "${name}" has a single level ${JSON.stringify(levels[0])}`,
      );
    }
    const dummies = levels.slice(1);
    blocks.set(name, {
      names: dummies.map((l) => `${name}=${l}`),
      columns: dummies.map((l) => values.map((v) => (v === l ? 1 : 0))),
    });
  }
  const outNames = ["(intercept)"];
  const outColumns: number[][] = [new Array(n).fill(1)];
  for (const block of blocks.values()) {
    outNames.push(...block.names);
    outColumns.push(...block.columns);
  }
  for (const [a, b] of spec.interactions ?? []) {
    const A = blocks.get(a), B = blocks.get(b);
    if (!A || !B) {
      throw new Error(
        `designMatrix: interaction ${a}:${b} needs both as continuous or categorical predictors`,
      );
    }
    if (a === b) throw new Error(`designMatrix: interaction of "${a}" with itself`);
    A.columns.forEach((ca, i) =>
      B.columns.forEach((cb, j) => {
        outNames.push(`${A.names[i]}:${B.names[j]}`);
        outColumns.push(ca.map((v, r) => v * cb[r]));
      })
    );
  }
  const X = Array.from({ length: n }, (_, r) => outColumns.map((c) => c[r]));
  return { X, names: outNames };
}

/** An ordinary least squares fit y = X beta + e; per-coefficient arrays have p entries, in `names` order. */
export interface OlsFit {
  /** Column names of X, column 0 the intercept. */
  names: string[];
  /** The least squares estimates beta. */
  coefficients: number[];
  /** Standard errors sqrt(sigma^2 (X^T X)^-1_jj), sigma^2 = rss / dfResidual. */
  stdErrors: number[];
  /** t = coefficient / standard error. */
  tValues: number[];
  /** Two-sided p-values of t with dfResidual degrees of freedom. */
  pValues: number[];
  /** y - X beta, one per row (n). */
  residuals: number[];
  /** Number of rows. */
  n: number;
  /** Number of coefficients, the intercept included. */
  p: number;
  /** Residual degrees of freedom n - p. */
  dfResidual: number;
  /** Residual sum of squares. */
  rss: number;
  /** Total sum of squares around the mean of y. */
  tss: number;
  /** Coefficient of determination 1 - rss / tss. */
  r2: number;
  /** Adjusted R^2: 1 - (rss / (n - p)) / (tss / (n - 1)). */
  adjR2: number;
}

/**
 * Least squares fit of y = X beta by Householder QR (stabler than the normal equations). X must
 * hold an intercept column (R^2 is measured around the mean of y); a column that is (nearly) a
 * linear combination of earlier ones is an error naming it.
 */
export function ols(X: readonly (readonly number[])[], y: readonly number[], names?: string[]): OlsFit {
  const n = X.length;
  if (n === 0) throw new Error("ols: no rows");
  if (y.length !== n) throw new Error(`ols: X has ${n} rows, y has ${y.length} values`);
  const p = X[0].length;
  const colName = (j: number) => names?.[j] ?? `column ${j}`;
  if (names && names.length !== p) throw new Error(`ols: ${names.length} names for ${p} columns`);
  if (n <= p) throw new Error(`ols: ${n} rows cannot fit ${p} coefficients with residual degrees of freedom`);
  requireValues("ols y", y, 1);
  // A holds X column-major; it is overwritten with R (upper triangle) as the reflections go.
  const A = Array.from({ length: p }, (_, j) =>
    Float64Array.from(X, (row, i) => {
      if (row.length !== p) throw new Error(`ols: row ${i} has ${row.length} values, row 0 has ${p}`);
      if (!Number.isFinite(row[j])) throw new Error(`ols: X[${i}][${j}] is ${row[j]}`);
      return row[j];
    }));
  const qty = Float64Array.from(y); // becomes Q^T y
  // A column whose norm (nearly) vanishes once earlier columns are projected out is dependent on them.
  const originalNorms = A.map((c) => Math.sqrt(c.reduce((s, v) => s + v * v, 0)));
  for (let j = 0; j < p; j++) {
    // Householder reflection H = I - 2 v v^T / (v^T v) that zeroes A[j][j+1..n) below the diagonal.
    const col = A[j];
    let norm = 0;
    for (let i = j; i < n; i++) norm += col[i] * col[i];
    norm = Math.sqrt(norm);
    if (norm <= 1e-10 * originalNorms[j]) {
      throw new Error(
        `ols: the design matrix is rank-deficient: ${
          colName(j)
        } is (nearly) a combination of earlier columns`,
      );
    }
    const alpha = col[j] > 0 ? -norm : norm;
    const v = new Float64Array(n);
    for (let i = j; i < n; i++) v[i] = col[i];
    v[j] -= alpha;
    let vv = 0;
    for (let i = j; i < n; i++) vv += v[i] * v[i];
    const reflect = (target: Float64Array) => {
      let dot = 0;
      for (let i = j; i < n; i++) dot += v[i] * target[i];
      const f = (2 * dot) / vv;
      for (let i = j; i < n; i++) target[i] -= f * v[i];
    };
    for (let k = j; k < p; k++) reflect(A[k]);
    reflect(qty);
  }
  // R beta = (Q^T y)[0..p) by back substitution; R[i][k] is A[k][i].
  const beta = new Array<number>(p).fill(0);
  for (let i = p - 1; i >= 0; i--) {
    let s = qty[i];
    for (let k = i + 1; k < p; k++) s -= A[k][i] * beta[k];
    beta[i] = s / A[i][i];
  }
  const residuals = y.map((yi, i) => yi - X[i].reduce((s, x, j) => s + x * beta[j], 0));
  const rss = residuals.reduce((s, r) => s + r * r, 0);
  const yMean = mean(y);
  const tss = y.reduce((s, yi) => s + (yi - yMean) ** 2, 0);
  const dfResidual = n - p;
  const sigma2 = rss / dfResidual;
  // (X^T X)^-1 = R^-1 R^-T: the diagonal is the squared row norms of R^-1.
  const rInv = Array.from({ length: p }, () => new Array<number>(p).fill(0)); // rInv[i][k], upper triangular
  for (let k = 0; k < p; k++) {
    rInv[k][k] = 1 / A[k][k];
    for (let i = k - 1; i >= 0; i--) {
      let s = 0;
      for (let m = i + 1; m <= k; m++) s += A[m][i] * rInv[m][k];
      rInv[i][k] = -s / A[i][i];
    }
  }
  const stdErrors = rInv.map((row) => Math.sqrt(sigma2 * row.reduce((s, v) => s + v * v, 0)));
  const tValues = beta.map((b, j) => b / stdErrors[j]);
  const r2 = tss > 0 ? 1 - rss / tss : NaN;
  return {
    names: names ?? beta.map((_, j) => colName(j)),
    coefficients: beta,
    stdErrors,
    tValues,
    pValues: tValues.map((t) => studentTTwoSidedP(t, dfResidual)),
    residuals,
    n,
    p,
    dfResidual,
    rss,
    tss,
    r2,
    adjR2: 1 - (1 - r2) * (n - 1) / dfResidual,
  };
}

/** OLS of data[response] on the predictors of `spec` (an intercept is always included). */
export function fitOls(data: DataTable, response: string, spec: ModelSpec): OlsFit {
  const y = data[response];
  if (!y) throw new Error(`fitOls: no response column "${response}"`);
  y.forEach((v, i) => {
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new Error(`fitOls: response "${response}" row ${i} is ${JSON.stringify(v)}, not a finite number`);
    }
  });
  const { X, names } = designMatrix(data, spec);
  return ols(X, y as number[], names);
}

/** A nested-model F-test (nestedFTest): does the full model fit better than the reduced one? */
export interface FTest {
  /** F = ((RSS_r - RSS_f) / df1) / (RSS_f / df2). */
  F: number;
  /** Extra coefficients of the full model. */
  df1: number;
  /** Residual degrees of freedom of the full model. */
  df2: number;
  /** Upper-tail p-value of F with (df1, df2) degrees of freedom. */
  p: number;
  /** R^2 gained by the full model. */
  r2Gain: number;
}

/**
 * Nested-model F-test: does `full` (a superset of `reduced`'s columns, same rows) fit significantly
 * better? F = ((RSS_r - RSS_f) / (p_f - p_r)) / (RSS_f / (n - p_f)).
 */
export function nestedFTest(reduced: OlsFit, full: OlsFit): FTest {
  if (reduced.n !== full.n) throw new Error(`nestedFTest: the models have ${reduced.n} and ${full.n} rows`);
  if (full.p <= reduced.p) {
    throw new Error(
      `nestedFTest: the full model has ${full.p} coefficients, not more than the reduced ${reduced.p}`,
    );
  }
  const missing = reduced.names.filter((n) => !full.names.includes(n));
  if (missing.length) {
    throw new Error(`nestedFTest: the full model lacks the reduced model's columns ${missing.join(", ")}`);
  }
  const df1 = full.p - reduced.p, df2 = full.dfResidual;
  // Rounding can leave a tiny negative difference when the extra columns explain nothing.
  const F = (Math.max(0, reduced.rss - full.rss) / df1) / (full.rss / df2);
  return { F, df1, df2, p: fSurvival(F, df1, df2), r2Gain: full.r2 - reduced.r2 };
}

/** The R^2 of Hase et al.'s three regressions of y on a group (the edit layer) and x (groupedLineR2). */
export interface GroupedR2 {
  /** R^2 of y on the group alone (a mean per group). */
  group: number;
  /** R^2 of y on x alone (one line). */
  line: number;
  /** R^2 of y on a line per group (a_g + b_g x; a group whose x does not vary keeps only its mean). */
  both: number;
}

/**
 * The three R^2 of Hase et al.'s regressions (layer as categorical, the effect, both interacted) in
 * closed form, rows weighted by w (bootstrap counts; 1 each for the plain fit): the interacted model
 * y = a_g + b_g x fits each group by its own simple regression, so its RSS is the sum over groups of
 * Syy - Sxy^2 / Sxx (centred, weighted sums), the group-only RSS the sum of Syy, and the one-line RSS
 * the pooled Syy - Sxy^2 / Sxx. Agrees with `ols` on the expanded design (tests/stats_test.ts); O(rows).
 * A group counts as having no slope when its x range is at most `flatRange` (as r2Table decides).
 */
export function groupedLineR2(
  group: readonly number[],
  x: readonly number[],
  y: readonly number[],
  w: ArrayLike<number>,
  flatRange = 0,
): GroupedR2 {
  return new GroupedLines(group, x, y, flatRange).r2(w);
}

/**
 * groupedLineR2's rows prepared once for many weightings (a bootstrap's thousand resamples of one table):
 * the groups numbered once, the values in typed arrays.
 */
export class GroupedLines {
  /** Each row's group as a dense number 0.. (in order of first appearance). */
  private readonly id: Int32Array;
  private readonly groups: number;
  private readonly x: Float64Array;
  private readonly y: Float64Array;

  /** Rows i of (group[i], x[i], y[i]); a group counts as flat (no slope) when its x range is at most
   *  `flatRange`. */
  constructor(group: readonly number[], x: readonly number[], y: readonly number[], readonly flatRange = 0) {
    if (x.length !== y.length || group.length !== y.length) {
      throw new Error(`groupedLineR2: ${group.length} groups, ${x.length} x and ${y.length} y values`);
    }
    const ids = new Map<number, number>();
    this.id = Int32Array.from(group, (g) => {
      let k = ids.get(g);
      if (k === undefined) ids.set(g, k = ids.size);
      return k;
    });
    this.groups = ids.size;
    [this.x, this.y] = [Float64Array.from(x), Float64Array.from(y)];
  }

  /** The three R^2 with row i weighted w[i]. */
  r2(w: ArrayLike<number>): GroupedR2 {
    const { id, x, y } = this, rows = y.length;
    // The groups numbered by first appearance among the weighted rows (every sum adds in row order, and
    // the groups' RSS in that order): slot[id] = the group's place, -1 while unseen.
    const slot = new Int32Array(this.groups).fill(-1);
    let G = 0;
    for (let i = 0; i < rows && G < this.groups; i++) {
      if (w[i] !== 0 && slot[id[i]] === -1) slot[id[i]] = G++;
    }
    const [gn, gx, gy] = [new Float64Array(G), new Float64Array(G), new Float64Array(G)];
    const [lo, hi] = [new Float64Array(G).fill(Infinity), new Float64Array(G).fill(-Infinity)];
    let n = 0, sx = 0, sy = 0;
    for (let i = 0; i < rows; i++) {
      const wi = w[i];
      if (wi === 0) continue;
      const k = slot[id[i]], xi = x[i], yi = y[i];
      gn[k] += wi, gx[k] += wi * xi, gy[k] += wi * yi;
      if (xi < lo[k]) lo[k] = xi;
      if (xi > hi[k]) hi[k] = xi;
      n += wi, sx += wi * xi, sy += wi * yi;
    }
    // Second pass: centred sums (stable where the raw moments would cancel).
    const [cxx, cxy, cyy] = [new Float64Array(G), new Float64Array(G), new Float64Array(G)];
    for (let k = 0; k < G; k++) gx[k] /= gn[k], gy[k] /= gn[k]; // the groups' means
    let txx = 0, txy = 0, tyy = 0;
    const [mx, my] = [sx / n, sy / n];
    for (let i = 0; i < rows; i++) {
      const wi = w[i];
      if (wi === 0) continue;
      const k = slot[id[i]];
      const dx = x[i] - gx[k], dy = y[i] - gy[k], ex = x[i] - mx, ey = y[i] - my;
      cxx[k] += wi * dx * dx, cxy[k] += wi * dx * dy, cyy[k] += wi * dy * dy;
      txx += wi * ex ** 2, txy += wi * ex * ey, tyy += wi * ey ** 2;
    }
    let rssGroup = 0, rssBoth = 0;
    for (let k = 0; k < G; k++) {
      rssGroup += cyy[k];
      rssBoth += hi[k] - lo[k] > this.flatRange && cxx[k] > 0
        ? Math.max(0, cyy[k] - (cxy[k] * cxy[k]) / cxx[k])
        : cyy[k];
    }
    const rssLine = txx > 0 ? Math.max(0, tyy - (txy * txy) / txx) : tyy;
    if (!(tyy > 0)) return { group: NaN, line: NaN, both: NaN };
    return { group: 1 - rssGroup / tyy, line: 1 - rssLine / tyy, both: 1 - rssBoth / tyy };
  }
}
