// experiments/study/stats.ts against textbook values, closed forms, and numbers computed independently
// in Python (numpy 2.4 for least squares, mpmath 1.3 at 30-40 digits for the incomplete beta, t and
// F distributions); each expected number says where it came from.
import assert from "node:assert/strict";
import { mulberry32 } from "../engine/random.ts";
import {
  bootstrapCI,
  bootstrapUnits,
  cohensF2,
  designMatrix,
  fCdf,
  fitOls,
  fSurvival,
  groupedLineR2,
  holm,
  logGamma,
  mean,
  median,
  nestedFTest,
  ols,
  pairedTTest,
  pearson,
  quantile,
  regularizedIncompleteBeta,
  sem,
  std,
  studentTCdf,
  studentTQuantile,
  studentTTwoSidedP,
  tukeyFences,
  variance,
  verdict,
  weightedMean,
} from "../experiments/study/stats.ts";

/** |actual - expected| <= tol * max(1, |expected|)  (relative for large, absolute for small values). */
function near(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)),
    `${what}: got ${actual}, expected ${expected} (tolerance ${tol})`,
  );
}

/** Relative closeness, for p-values that may be tiny. */
function relNear(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= tol * Math.abs(expected),
    `${what}: got ${actual}, expected ${expected} (relative ${tol})`,
  );
}

Deno.test("mean, variance, std, sem of a hand-worked sample", () => {
  const xs = [2, 4, 4, 4, 5, 5, 7, 9]; // sum 40, squared deviations 9+1+1+1+0+0+4+16 = 32
  assert.equal(mean(xs), 5);
  near(variance(xs), 32 / 7, 1e-15, "variance");
  near(std(xs), Math.sqrt(32 / 7), 1e-15, "std");
  near(sem(xs), Math.sqrt(32 / 7) / Math.sqrt(8), 1e-15, "sem");
  assert.throws(() => variance([1]), /at least 2 values/);
  assert.throws(() => mean([1, NaN]), /value 1 is NaN/);
});

Deno.test("quantile interpolates like numpy's default", () => {
  const xs = [100, 1, 2, 3, 4, 5, 6, 7, 8, 9]; // order must not matter
  // numpy.quantile([1..9, 100], [0.25, 0.75, 0.1, 0.5, 0.9]) = [3.25, 7.75, 1.9, 5.5, 18.1]
  const expected: [number, number][] = [[0.25, 3.25], [0.75, 7.75], [0.1, 1.9], [0.5, 5.5], [0.9, 18.1], [
    0,
    1,
  ], [1, 100]];
  for (const [q, v] of expected) near(quantile(xs, q), v, 1e-12, `q=${q}`);
  assert.throws(() => quantile(xs, 1.5), /q must be in \[0, 1\]/);
});

Deno.test("median: the middle value, or the mean of the two middle values", () => {
  assert.equal(median([9, 1, 5]), 5);
  assert.equal(median([4, 1, 3, 2]), 2.5); // numpy.median([4, 1, 3, 2]) = 2.5
  assert.throws(() => median([]), /quantile/);
});

Deno.test("Tukey's fences flag the value outside q1 - 1.5 IQR .. q3 + 1.5 IQR", () => {
  const xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 100, -20];
  // sorted: -20, 1..9, 100 -> q1 = 2.5, q3 = 7.5 (h = 2.5 and 7.5), IQR 5, fences -5 and 15
  const f = tukeyFences(xs);
  assert.deepEqual([f.q1, f.q3, f.iqr, f.lower, f.upper], [2.5, 7.5, 5, -5, 15]);
  assert.deepEqual(f.outliers, [9, 10]);
  assert.deepEqual(f.inliers, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  // k = 3 ("far out"): fences -12.5 and 22.5, both values are still outside
  assert.deepEqual(tukeyFences(xs, 3).outliers, [9, 10]);
  // a wide k keeps everything
  assert.deepEqual(tukeyFences(xs, 30).outliers, []);
});

Deno.test("bootstrap CI: seeded, reproducible, sensible", () => {
  const xs = Array.from({ length: 200 }, (_, i) => Math.sin(i * 1.7) * 3 + 10);
  const a = bootstrapCI(xs, { seed: 42 });
  const b = bootstrapCI(xs, { seed: 42 });
  const c = bootstrapCI(xs, { seed: 43 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  // The default (the mean, summed from the resample's counts) gives the bits of mean() of each resample.
  assert.deepEqual(a, bootstrapCI(xs, { seed: 42, statistic: mean }));
  near(a.estimate, mean(xs), 1e-15, "estimate");
  assert.ok(a.lower < a.estimate && a.estimate < a.upper);
  // For a mean, the percentile interval is close to mean +- 1.96 sem.
  const half = 1.96 * sem(xs);
  near(a.upper - a.lower, 2 * half, 0.15 * 2 * half, "width vs 1.96 sem");
  // A constant sample has a zero-width interval; any statistic can be bootstrapped.
  assert.deepEqual(bootstrapCI([3, 3, 3], { seed: 1 }), { estimate: 3, lower: 3, upper: 3, level: 0.95 });
  const median = bootstrapCI(xs, { statistic: (s) => quantile(s, 0.5), seed: 5, level: 0.9, resamples: 500 });
  near(median.estimate, quantile(xs, 0.5), 0, "median");
  assert.equal(median.level, 0.9);
  assert.throws(() => bootstrapCI(xs, { level: 1 }), /level must be in \(0, 1\)/);
});

Deno.test("log Gamma: factorials and Gamma(1/2) = sqrt(pi)", () => {
  for (let n = 1; n <= 20; n++) {
    let f = 1;
    for (let k = 2; k < n; k++) f *= k;
    near(logGamma(n), Math.log(f), 1e-13, `lnGamma(${n})`);
  }
  near(logGamma(0.5), 0.5 * Math.log(Math.PI), 1e-14, "lnGamma(1/2)");
  near(logGamma(0.1), Math.log(9.513507698668731836), 1e-13, "lnGamma(0.1)"); // Gamma(0.1), tables
});

Deno.test("regularized incomplete beta: closed forms", () => {
  for (const x of [0.01, 0.2, 0.5, 0.77, 0.999]) {
    near(regularizedIncompleteBeta(x, 1, 1), x, 1e-14, `I_${x}(1,1)`);
    near(regularizedIncompleteBeta(x, 3.5, 1), x ** 3.5, 1e-13, `I_${x}(3.5,1) = x^3.5`);
    near(regularizedIncompleteBeta(x, 1, 4.25), 1 - (1 - x) ** 4.25, 1e-13, `I_${x}(1,4.25)`);
    // symmetry I_x(a,b) = 1 - I_{1-x}(b,a)
    near(
      regularizedIncompleteBeta(x, 2.2, 5.1),
      1 - regularizedIncompleteBeta(1 - x, 5.1, 2.2),
      1e-13,
      "symmetry",
    );
  }
  for (const a of [0.3, 1, 2.5, 10, 120]) {
    near(regularizedIncompleteBeta(0.5, a, a), 0.5, 1e-12, `I_0.5(${a},${a})`);
  }
  // I_x(1/2, 1/2) = (2/pi) asin(sqrt(x)) (the arcsine distribution)
  near(
    regularizedIncompleteBeta(0.001, 0.5, 0.5),
    (2 / Math.PI) * Math.asin(Math.sqrt(0.001)),
    1e-13,
    "arcsine",
  );
  assert.equal(regularizedIncompleteBeta(0, 2, 3), 0);
  assert.equal(regularizedIncompleteBeta(1, 2, 3), 1);
  assert.throws(() => regularizedIncompleteBeta(1.2, 2, 3), /x must be in \[0, 1\]/);
  assert.throws(() => regularizedIncompleteBeta(0.5, 0, 3), /a and b must be > 0/);
});

Deno.test("regularized incomplete beta against mpmath.betainc", () => {
  // mpmath.betainc(a, b, 0, x, regularized=True) at 40 digits
  const cases: [number, number, number, number][] = [
    [0.3, 2.5, 7.2, 0.65669439180829174009],
    [0.9, 50, 3, 0.096633285137252208871],
    [0.001, 0.5, 0.5, 0.020135041633377491182],
    [0.7, 200, 100, 0.89115693435508984738],
    [0.6, 0.1, 10, 0.99999792083369466316],
    [0.999, 30, 0.7, 0.90690940624811321441],
  ];
  for (const [x, a, b, v] of cases) near(regularizedIncompleteBeta(x, a, b), v, 1e-12, `I_${x}(${a},${b})`);
});

Deno.test("Student t: Cauchy and df=2 closed forms, table critical values, tiny tails", () => {
  for (const t of [-30, -2.5, -0.3, 0, 0.7, 4, 1e3]) {
    near(studentTCdf(t, 1), 0.5 + Math.atan(t) / Math.PI, 1e-13, `Cauchy cdf(${t})`);
    near(studentTCdf(t, 2), 0.5 + t / (2 * Math.sqrt(2 + t * t)), 1e-13, `t2 cdf(${t})`);
  }
  // Critical values from t tables, at full precision by mpmath root finding:
  near(studentTCdf(2.228138851986274, 10), 0.975, 1e-13, "t_{0.975,10} = 2.228");
  near(studentTCdf(2.749995653567225, 30), 0.995, 1e-13, "t_{0.995,30} = 2.750");
  near(studentTCdf(-2.015048373333024, 5), 0.05, 1e-13, "-t_{0.95,5} = -2.015");
  near(studentTTwoSidedP(2.228138851986274, 10), 0.05, 1e-13, "two-sided 0.05");
  // A small tail keeps its relative precision: mpmath betainc(4, 1/2, 0, 8/(8+144))
  relNear(studentTTwoSidedP(12, 8), 2.1438667476887711505e-6, 1e-10, "p for t=12, df=8");
  assert.equal(studentTCdf(Infinity, 3), 1);
  assert.equal(studentTTwoSidedP(-Infinity, 3), 0);
});

Deno.test("F distribution: d1=2 closed form and table critical values", () => {
  // For d1 = 2: P(F > f) = (1 + 2f/d2)^(-d2/2)
  for (const [f, d2] of [[0.5, 7], [3, 12], [10, 40], [0.01, 3]]) {
    near(fSurvival(f, 2, d2), (1 + (2 * f) / d2) ** (-d2 / 2), 1e-13, `F(2,${d2}) survival at ${f}`);
    near(fCdf(f, 2, d2), 1 - (1 + (2 * f) / d2) ** (-d2 / 2), 1e-13, `F(2,${d2}) cdf at ${f}`);
  }
  near(fCdf(3.098391212140779, 3, 20), 0.95, 1e-13, "F_{0.95}(3,20) = 3.10");
  near(fSurvival(7.559432157547898, 2, 10), 0.01, 1e-13, "F_{0.99}(2,10) = 7.56");
  // F(1, d) is t(d)^2: P(F > t^2) = P(|T| > t)
  near(fSurvival(2.5 ** 2, 1, 9), studentTTwoSidedP(2.5, 9), 1e-13, "F(1,9) = t(9)^2");
  assert.equal(fSurvival(0, 3, 4), 1);
  assert.equal(fCdf(-1, 3, 4), 0);
});

Deno.test("Pearson correlation with its t-test p-value", () => {
  const x = [1.0, 2.3, 3.1, 4.8, 5.6, 6.3, 7.9, 8.4];
  const y = [2.1, 2.9, 3.5, 5.2, 4.9, 6.8, 7.1, 8.9];
  const c = pearson(x, y);
  // numpy.corrcoef -> r; t = r sqrt(6/(1-r^2)); p = betainc(3, 1/2, 0, 6/(6+t^2)) by mpmath
  near(c.r, 0.9732824559974321, 1e-13, "r");
  near(c.t, 10.382970646024791, 1e-11, "t");
  assert.equal(c.df, 6);
  relNear(c.p, 4.6728971672281819e-5, 1e-9, "p");
  // r is invariant to linear rescaling and flips sign with a negated variable
  near(pearson(x.map((v) => 3 * v - 1), y.map((v) => -v)).r, -c.r, 1e-14, "rescaled");
  assert.throws(() => pearson([1, 1, 1], [1, 2, 3]), /x is constant/);
  assert.throws(() => pearson([1, 2], [1, 2, 3]), /x has 2 values, y has 3/);
});

Deno.test("paired t-test: Student's (1908) sleep data", () => {
  // Cushny & Peebles' extra hours of sleep under two drugs, the textbook paired t example:
  // R's t.test(extra ~ group, data = sleep, paired = TRUE) prints t = -4.0621, df = 9, p-value = 0.002833.
  const drug1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0];
  const drug2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4];
  const r = pairedTTest(drug1, drug2);
  near(r.meanDifference, -1.58, 1e-14, "mean difference");
  near(r.t, -4.062127683382037, 1e-12, "t"); // numpy
  assert.equal(r.df, 9);
  relNear(r.p, 0.0028328901973842707, 1e-9, "p"); // mpmath betainc(4.5, 0.5, 0, 9/(9+t^2))
  assert.throws(() => pairedTTest([1, 2, 3], [0, 1, 2]), /every difference is the same/);
});

// Hase et al.'s regression on a synthetic sweep: rewrite score ~ edit layer (categorical, 3 levels)
// and tracing effect (continuous), with and without their interaction. 30 rows, generated once with
// numpy (seed 7: y = 0.2 + 0.3[layer=4] + 0.6[layer=8] + 0.1 effect + 0.25 effect [layer=8] + N(0, 0.05),
// rounded to 3 decimals) and pasted here.
const LAYER = Array.from({ length: 30 }, (_, i) => (i % 3) * 4);
const EFFECT = [
  0.625,
  0.897,
  0.776,
  0.225,
  0.3,
  0.874,
  0.005,
  0.821,
  0.797,
  0.468,
  0.303,
  0.278,
  0.255,
  0.445,
  0.505,
  0.553,
  0.996,
  0.793,
  0.622,
  0.989,
  0.215,
  0.16,
  0.613,
  0.044,
  0.036,
  0.515,
  0.466,
  0.917,
  0.629,
  0.514,
];
const SCORE = [
  0.186,
  0.566,
  1.023,
  0.182,
  0.583,
  1.066,
  0.199,
  0.626,
  1.05,
  0.241,
  0.536,
  0.9,
  0.164,
  0.548,
  1.045,
  0.178,
  0.643,
  1.084,
  0.23,
  0.699,
  0.913,
  0.156,
  0.565,
  0.844,
  0.194,
  0.586,
  0.96,
  0.325,
  0.635,
  0.946,
];
const SWEEP = { layer: LAYER, effect: EFFECT, score: SCORE };

Deno.test("design matrix: intercept, continuous, one-hot with a reference level, interactions", () => {
  const { X, names } = designMatrix(
    { method: ["rome", "ft", "rome", "memit"], x: [1, 2, 3, 4] },
    { continuous: ["x"], categorical: ["method"], interactions: [["method", "x"]] },
  );
  // levels sorted: ft (reference), memit, rome
  assert.deepEqual(names, [
    "(intercept)",
    "x",
    "method=memit",
    "method=rome",
    "method=memit:x",
    "method=rome:x",
  ]);
  assert.deepEqual(X, [
    [1, 1, 0, 1, 0, 1],
    [1, 2, 0, 0, 0, 0],
    [1, 3, 0, 1, 0, 3],
    [1, 4, 1, 0, 4, 0],
  ]);
  // numeric categories sort numerically (layer 10 after layer 9)
  assert.deepEqual(designMatrix({ layer: [10, 9, 2] }, { categorical: ["layer"] }).names, [
    "(intercept)",
    "layer=9",
    "layer=10",
  ]);
  assert.throws(() => designMatrix({ x: [1, 2] }, { continuous: ["y"] }), /no column "y"/);
  assert.throws(() => designMatrix({ x: [1, "a"] }, { continuous: ["x"] }), /"x" row 1 is "a"/);
  assert.throws(() => designMatrix({ x: [1, 2], c: ["a", "a"] }, { categorical: ["c"] }), /single level "a"/);
  assert.throws(
    () => designMatrix({ c: [1, "1", 2] }, { categorical: ["c"] }),
    /"c" mixes numbers and strings/,
  );
  assert.throws(() => designMatrix({ x: [1, 2], z: [1] }, { continuous: ["x", "z"] }), /"z" has 1 values/);
});

Deno.test("OLS matches numpy lstsq: layer only, effect only, layer x effect", () => {
  // numpy.linalg.lstsq; se = sqrt(diag(rss/(n-p) inv(X^T X))); p-values by mpmath
  const layerOnly = fitOls(SWEEP, "score", { categorical: ["layer"] });
  assert.deepEqual(layerOnly.names, ["(intercept)", "layer=4", "layer=8"]);
  [0.20549999999999982, 0.3932000000000003, 0.7776000000000002].forEach((b, j) =>
    near(layerOnly.coefficients[j], b, 1e-12, `b${j}`)
  );
  [0.019758495594253835, 0.027942732441482824, 0.02794273244148282].forEach((s, j) =>
    near(layerOnly.stdErrors[j], s, 1e-12, `se${j}`)
  );
  near(layerOnly.rss, 0.10540750000000004, 1e-12, "rss");
  near(layerOnly.r2, 0.9663110548309722, 1e-12, "R^2");
  near(layerOnly.adjR2, 0.9638155774110443, 1e-12, "adjusted R^2");

  const effectOnly = fitOls(SWEEP, "score", { continuous: ["effect"] });
  [0.4039009180430816, 0.3681230787098715].forEach((b, j) =>
    near(effectOnly.coefficients[j], b, 1e-12, `b${j}`)
  );
  near(effectOnly.r2, 0.10799721293013331, 1e-12, "R^2");
  near(effectOnly.adjR2, 0.07613997053478094, 1e-12, "adjusted R^2");

  const full = fitOls(SWEEP, "score", {
    continuous: ["effect"],
    categorical: ["layer"],
    interactions: [["layer", "effect"]],
  });
  assert.deepEqual(full.names, [
    "(intercept)",
    "effect",
    "layer=4",
    "layer=8",
    "layer=4:effect",
    "layer=8:effect",
  ]);
  const beta = [
    0.16162037541657917,
    0.11350135691521201,
    0.34846144919678856,
    0.6803854818504316,
    0.022666706063632754,
    0.15463650460700282,
  ];
  const se = [
    0.019487799908390523,
    0.040760875879309114,
    0.03735229829719239,
    0.031852997794174095,
    0.06122526520973644,
    0.05898699735805363,
  ];
  const p = [
    1.658408030821891e-8,
    0.010291215636093562,
    1.8745349886738421e-9,
    4.0033242797221058e-17,
    0.71446714325008171,
    0.014957073275521601,
  ];
  beta.forEach((b, j) => near(full.coefficients[j], b, 1e-11, `beta ${full.names[j]}`));
  se.forEach((s, j) => near(full.stdErrors[j], s, 1e-11, `se ${full.names[j]}`));
  p.forEach((v, j) => relNear(full.pValues[j], v, 1e-7, `p ${full.names[j]}`));
  near(full.rss, 0.031549178016259755, 1e-12, "rss");
  near(full.r2, 0.9899166707462214, 1e-12, "R^2");
  near(full.adjR2, 0.9878159771516841, 1e-12, "adjusted R^2");
  assert.equal(full.dfResidual, 24);
  near(full.residuals.reduce((s, r) => s + r * r, 0), full.rss, 1e-15, "residuals");

  // Nested F-test "does the tracing effect add to the layer?": F = ((RSS_r - RSS_f)/3)/(RSS_f/24)
  const f = nestedFTest(layerOnly, full);
  assert.deepEqual([f.df1, f.df2], [3, 24]);
  near(f.F, 18.728430121551902, 1e-10, "F");
  relNear(f.p, 1.7716933181259824087e-6, 1e-8, "p"); // mpmath 1 - I_{3F/(3F+24)}(3/2, 12)
  near(f.r2Gain, 0.9899166707462214 - 0.9663110548309722, 1e-12, "R^2 gain");
  assert.throws(() => nestedFTest(full, layerOnly), /not more than the reduced/);
  const squared = fitOls({ ...SWEEP, squared: EFFECT.map((e) => e * e) }, "score", {
    categorical: ["layer"],
    continuous: ["squared"],
  });
  assert.throws(() => nestedFTest(effectOnly, squared), /lacks the reduced model's columns effect/);
});

Deno.test("OLS recovers exact coefficients and rejects rank-deficient designs", () => {
  const x = [0, 1, 2, 3, 4, 5];
  const y = x.map((v) => 2 - 0.5 * v);
  const fit = ols(x.map((v) => [1, v]), y);
  near(fit.coefficients[0], 2, 1e-14, "intercept");
  near(fit.coefficients[1], -0.5, 1e-14, "slope");
  near(fit.r2, 1, 1e-14, "perfect fit");
  assert.throws(() => ols(x.map((v) => [1, v, 2 * v + 1]), y, ["1", "x", "2x+1"]), /rank-deficient: 2x\+1/);
  assert.throws(() => ols([[1, 0], [1, 1]], [0, 1]), /cannot fit 2 coefficients/);
  assert.throws(() => ols([[1, 0], [1, 1], [1, 2]], [0, 1]), /3 rows, y has 2/);
});

Deno.test("Student t quantiles match scipy.stats.t.ppf", () => {
  // scipy 1.17: t.ppf(p, df)
  const cases: [number, number, number][] = [
    [0.975, 5, 2.5705818356363146],
    [0.975, 1, 12.706204736174694],
    [0.025, 30, -2.042272456301238],
    [0.999, 3, 10.214531852407383],
    [0.6, 100, 0.25402218245822766],
  ];
  for (const [p, df, q] of cases) relNear(studentTQuantile(p, df), q, 1e-10, `t.ppf(${p}, ${df})`);
  assert.throws(() => studentTQuantile(1, 3), /p must be in \(0, 1\)/);
});

Deno.test("paired t-test: interval and Cohen's d_z match scipy.stats.ttest_rel", () => {
  const a = [0.91, 0.85, 0.99, 0.72, 0.88, 0.95, 0.67, 0.81];
  const b = [0.80, 0.86, 0.90, 0.60, 0.70, 0.93, 0.66, 0.75];
  // scipy 1.17: r = ttest_rel(a, b); r.confidence_interval(0.95); d = a - b; d.mean() / d.std(ddof=1)
  const r = pairedTTest(a, b);
  near(r.t, 3.1776988772339525, 1e-12, "t");
  relNear(r.p, 0.015540342594255248, 1e-9, "p");
  near(r.lower, 0.018550502308858248, 1e-12, "lower");
  near(r.upper, 0.12644949769114175, 1e-12, "upper");
  near(r.dz, 1.123486212330503, 1e-12, "d_z");
});

Deno.test("Holm's adjustment: a hand-worked family, NaN kept out of m, monotone", () => {
  // sorted 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to 0.06)
  const adjusted = holm([0.01, 0.04, NaN, 0.03, 0.005]);
  [0.03, 0.06, NaN, 0.06, 0.02].forEach((e, i) =>
    Number.isNaN(e) ? assert.ok(Number.isNaN(adjusted[i])) : near(adjusted[i], e, 1e-15, `p${i}`)
  );
  // capped at 1; one test is its own family
  assert.deepEqual(holm([0.5, 0.6]), [1, 1]);
  assert.deepEqual(holm([0.2]), [0.2]);
  assert.throws(() => holm([0.1, 1.5]), /p-value 1 is 1.5/);
});

Deno.test("verdict: the corrected test and the minimum effect must agree", () => {
  assert.equal(verdict(0.001, 0.3, 0.1), "effect");
  assert.equal(verdict(0.001, -0.3, 0.1), "effect"); // either sign
  assert.equal(verdict(0.001, 0.05, 0.1), "no effect"); // significant but tiny
  assert.equal(verdict(0.2, 0.9, 0.1), "no effect"); // large but not significant
  assert.equal(verdict(0.05, 0.9, 0.1), "no effect"); // p must be below alpha
  assert.equal(verdict(NaN, 0.9, 0.1), "n/a");
  // f^2 = (0.5 - 0.4) / (1 - 0.5)
  near(cohensF2(0.4, 0.5), 0.2, 1e-15, "f2");
});

Deno.test("groupedLineR2 equals OLS on the expanded design (numpy lstsq) and on replicated rows", () => {
  const g = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
  const x = [.1, .4, .35, .8, 0, .2, .5, .9, .3, .3, .3, .3]; // group 2: no slope
  const y = [.2, .5, .3, .9, .6, .4, .7, .8, .1, .5, .2, .4];
  const r = groupedLineR2(g, x, y, new Float64Array(12).fill(1));
  // numpy: R^2 of lstsq on [1, d1, d2], [1, x], [1, d1, d2, x d0, x d1]
  near(r.group, 0.308252427184466, 1e-12, "group");
  near(r.line, 0.4488908386899879, 1e-12, "line");
  near(r.both, 0.7741072653704226, 1e-12, "both");
  // Integer weights are replicated rows: compare with this file's OLS on the expanded table.
  const w = [2, 0, 1, 3, 1, 1, 2, 0, 1, 2, 1, 1];
  const rows = w.flatMap((k, i) => Array.from({ length: k }, () => i));
  const table = {
    y: rows.map((i) => y[i]),
    layer: rows.map((i) => g[i]),
    x: rows.map((i) => x[i]),
    x0: rows.map((i) => (g[i] === 0 ? x[i] : 0)),
    x1: rows.map((i) => (g[i] === 1 ? x[i] : 0)),
  };
  const weighted = groupedLineR2(g, x, y, w);
  near(weighted.group, fitOls(table, "y", { categorical: ["layer"] }).r2, 1e-12, "weighted group");
  near(weighted.line, fitOls(table, "y", { continuous: ["x"] }).r2, 1e-12, "weighted line");
  near(
    weighted.both,
    fitOls(table, "y", { categorical: ["layer"], continuous: ["x0", "x1"] }).r2,
    1e-12,
    "weighted both",
  );
  // A constant response has nothing to explain.
  assert.ok(Number.isNaN(groupedLineR2([0, 1], [0, 1], [1, 1], [1, 1]).group));
});

Deno.test("bootstrapUnits: the estimate uses every unit once, clusters resample together, seeded", () => {
  // Two rows per unit: a unit's rows are drawn together, so the weights of rows 2i and 2i+1 agree.
  const xs = [1, 1, 5, 5, 2, 2, 8, 8, 3, 3];
  const seen: number[][] = [];
  const [ci] = bootstrapUnits(5, (counts) => {
    seen.push([...counts]);
    const w = xs.map((_, r) => counts[Math.floor(r / 2)]);
    return [weightedMean(xs, w)];
  }, { seed: 3, resamples: 300 });
  near(ci.estimate, 3.8, 1e-15, "estimate");
  assert.deepEqual(seen[0], [1, 1, 1, 1, 1]);
  assert.ok(seen.slice(1).every((c) => c.reduce((a, b) => a + b) === 5));
  assert.ok(ci.lower >= 1 && ci.upper <= 8 && ci.lower < 3.8 && 3.8 < ci.upper);
  const again = bootstrapUnits(5, (c) => [weightedMean([1, 5, 2, 8, 3], c)], { seed: 3, resamples: 300 })[0];
  assert.deepEqual(again, ci); // the same draws whatever the rows per unit
  // The draws are mulberry32's, unit by unit: from a kept table (small n) or drawn resample by resample
  // (a table over 4M values, n = 4001 here), and the same again from a kept table.
  for (const [n, resamples] of [[7, 50], [4001, 1000], [7, 50]]) {
    const random = mulberry32(11), expected = new Float64Array(n);
    let calls = 0;
    bootstrapUnits(n, (counts) => {
      if (calls++ === 0) return [0]; // the estimate's (every unit once)
      expected.fill(0);
      for (let i = 0; i < n; i++) expected[Math.floor(random() * n)]++;
      const at = counts.findIndex((c, i) => c !== expected[i]);
      assert.equal(at, -1, `n ${n}, resample ${calls - 1}: unit ${at} drawn ${counts[at]} times`);
      return [0];
    }, { seed: 11, resamples });
    assert.equal(calls, resamples + 1);
  }
  // Mostly undefined resamples give an undefined interval, not a narrow one.
  const undef = bootstrapUnits(3, (c) => [c[0] === 1 ? 1 : NaN], { resamples: 100 })[0];
  assert.ok(Number.isNaN(undef.lower) && undef.estimate === 1);
});
