// Small dependency-free SVG charts: line charts (loss curves, per-layer curves). Pictures are
// plain SVG files a browser or an image viewer opens directly. Axes are honest by default: a linear
// y axis includes 0, an x axis of integers (layers, steps) gets integer ticks only, and tick labels
// carry the decimals their step needs.

export interface Series {
  name: string;
  /** [x, y] points. */
  points: [number, number][];
  /** An interval [lower, upper] per point (e.g. a 95% confidence interval), drawn as a shaded band
   *  and included in the y axis; NaN ends leave a gap. */
  band?: [number, number][];
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  logY?: boolean;
  /** A linear y axis includes 0 (probabilities, effects and scores have a meaningful origin) unless
   *  this is false; then the axis label says that it does not start at 0. */
  yZero?: boolean;
  /** Ticks at these x values with these labels instead of computed ones (e.g. a log-scaled x: value
   *  log10(n), label n). */
  xTicks?: { value: number; label: string }[];
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/** Text made safe for XML/SVG element content and double-quoted attributes. */
export function escapeXml(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!);
}

/** The 1-2-5 step that splits [lo, hi] into about `count` intervals (at least 1 with `integer`). */
function tickStep(lo: number, hi: number, count: number, integer: boolean): number {
  const step0 = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0)!;
  return integer ? Math.max(1, Math.round(step)) : step;
}

/** "Nice" tick values covering [lo, hi]: multiples k x step of a 1-2-5 step, computed from the integer
 *  k (no accumulated rounding, so 0 is exactly 0); integers only with `integer` (layer axes). */
export function ticks(lo: number, hi: number, count = 5, integer = false): number[] {
  if (!(hi > lo)) return [lo];
  const step = tickStep(lo, hi, count, integer);
  const out: number[] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) {
    out.push(Number((k * step).toPrecision(12)));
  }
  return out;
}

/** A tick label with as many decimals as the step between ticks needs: "0.25", "1,200" as "1200",
 *  exponents only for steps below 0.001 or values from 10^6 (so never "3e-18" for a zero). */
export function formatTick(v: number, step: number): string {
  if (v === 0) return "0";
  if (Math.abs(v) >= 1e6 || step < 1e-3) {
    return v.toExponential(Math.max(0, Math.ceil(-Math.log10(step / Math.abs(v)))));
  }
  const decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
  return v.toFixed(decimals);
}

/** log10 positions of 1, 2, 5 x 10^k inside [lo, hi] (both log10), or plain ticks if there are too few. */
function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let k = Math.floor(lo); k <= Math.ceil(hi); k++) {
    for (const m of [1, 2, 5]) {
      const t = k + Math.log10(m);
      if (t >= lo - 1e-9 && t <= hi + 1e-9) out.push(t);
    }
  }
  return out.length >= 2 ? out : ticks(lo, hi);
}

const LOG_STEPS = [0, Math.log10(2), Math.log10(5), 1];
function niceLogFloor(t: number): number {
  const k = Math.floor(t);
  return k + Math.max(...LOG_STEPS.filter((s) => k + s <= t + 1e-9));
}
function niceLogCeil(t: number): number {
  const k = Math.floor(t);
  return k + Math.min(...LOG_STEPS.filter((s) => k + s >= t - 1e-9));
}

export function lineChart(series: Series[], o: LineChartOptions): string {
  const H = o.height ?? 400;
  const W = (o.width ?? 640) + Math.max(0, 7 * Math.max(0, ...series.map((s) => s.name.length)) - 100);
  // The legend column is as wide as the longest series name (about 7 px per character at 12 px).
  const legendWidth = 50 + 7 * Math.max(0, ...series.map((s) => s.name.length));
  const m = { left: 64, right: legendWidth, top: 36, bottom: 48 };
  const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
  const bandPoints = series.flatMap((s) =>
    (s.band ?? []).flatMap(([lo, hi], i) =>
      [[s.points[i][0], lo], [s.points[i][0], hi]] as [number, number][]
    )
  );
  const all = [...series.flatMap((s) => s.points), ...bandPoints].filter(([, y]) =>
    Number.isFinite(y) && (!o.logY || y > 0)
  );
  const ty = (y: number) => (o.logY ? Math.log10(y) : y);
  const xs = all.map(([x]) => x), ys = all.map(([, y]) => ty(y));
  const [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [0, 1];
  let [y0, y1] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1];
  const yZero = !o.logY && o.yZero !== false;
  if (yZero) [y0, y1] = [Math.min(0, y0), Math.max(0, y1)];
  if (y1 === y0) [y0, y1] = yZero ? [0, 1] : [y0 - 1, y1 + 1];
  if (!o.logY) {
    // The axis ends on ticks, so the top and bottom values are labelled.
    const step = tickStep(y0, y1, 5, false);
    [y0, y1] = [Math.floor(y0 / step + 1e-9) * step, Math.ceil(y1 / step - 1e-9) * step];
  }
  const integerX = xs.every(Number.isInteger);
  if (o.logY) [y0, y1] = [niceLogFloor(y0), niceLogCeil(y1)]; // the axis starts and ends on a 1-2-5 tick
  const sx = (x: number) => m.left + (x1 === x0 ? pw / 2 : ((x - x0) / (x1 - x0)) * pw);
  const sy = (y: number) => m.top + ph - ((ty(y) - y0) / (y1 - y0)) * ph;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(o.title)}</text>`,
    `<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`,
  ];
  const xTicks = x1 > x0 ? ticks(x0, x1, 5, integerX) : [x0];
  const xStep = xTicks.length > 1 ? xTicks[1] - xTicks[0] : 1;
  const xLabels = o.xTicks ?? xTicks.map((t) => ({ value: t, label: formatTick(t, xStep) }));
  for (const { value, label } of xLabels) {
    parts.push(
      `<text class="xtick" x="${sx(value)}" y="${m.top + ph + 16}" text-anchor="middle">${
        escapeXml(label)
      }</text>`,
    );
  }
  const yTicks = o.logY ? logTicks(y0, y1) : ticks(y0, y1);
  for (const [i, t] of yTicks.entries()) {
    const v = o.logY ? 10 ** t : t;
    // A log axis labels each value with its own precision; a linear one with its step's.
    const step = o.logY ? Math.abs(v) : yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;
    const y = m.top + ph - ((t - y0) / (y1 - y0)) * ph;
    const zero = !o.logY && t === 0 && i > 0 && i < yTicks.length - 1;
    parts.push(
      `<line x1="${m.left}" x2="${m.left + pw}" y1="${y}" y2="${y}" stroke="${zero ? "#999" : "#eee"}"/>`,
    );
    parts.push(
      `<text class="ytick" x="${m.left - 6}" y="${y + 4}" text-anchor="end">${formatTick(v, step)}</text>`,
    );
  }
  parts.push(`<text x="${m.left + pw / 2}" y="${H - 10}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  parts.push(
    `<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${
      escapeXml(o.yLabel + (!o.logY && !yZero && y0 > 0 ? " (axis does not start at 0)" : ""))
    }</text>`,
  );
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    if (s.band) {
      // The band: upper ends left to right, lower ends back, one polygon per run of defined intervals.
      const ok = (j: number) =>
        Number.isFinite(s.band![j][0]) && Number.isFinite(s.band![j][1]) && (!o.logY || s.band![j][0] > 0);
      let run: number[] = [];
      const flush = () => {
        if (run.length > 0) {
          const up = run.map((j) => `${sx(s.points[j][0]).toFixed(1)},${sy(s.band![j][1]).toFixed(1)}`);
          const down = run.map((j) => `${sx(s.points[j][0]).toFixed(1)},${sy(s.band![j][0]).toFixed(1)}`)
            .reverse();
          // A single point's interval is a vertical error bar.
          parts.push(
            run.length === 1
              ? `<line class="band" x1="${up[0].split(",")[0]}" x2="${up[0].split(",")[0]}" y1="${
                up[0].split(",")[1]
              }" y2="${down[0].split(",")[1]}" stroke="${color}" stroke-width="2" stroke-opacity="0.5"/>`
              : `<polygon class="band" points="${
                [...up, ...down].join(" ")
              }" fill="${color}" fill-opacity="0.15"/>`,
          );
        }
        run = [];
      };
      s.points.forEach((_, j) => (ok(j) ? run.push(j) : flush()));
      flush();
    }
    const pts = s.points.filter(([, y]) => Number.isFinite(y) && (!o.logY || y > 0));
    if (pts.length) {
      const d = pts.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
      parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.5"/>`);
    }
    const ly = m.top + 10 + i * 18;
    parts.push(
      `<line x1="${W - m.right + 10}" x2="${
        W - m.right + 30
      }" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
    );
    parts.push(`<text x="${W - m.right + 36}" y="${ly + 4}">${escapeXml(s.name)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}

/**
 * Grouped bars, one bar per series in each group; consecutive groups with the same `section` (e.g. an
 * editing problem) are labelled together under their own labels (e.g. the methods). The value axis
 * runs from 0 (or from the lowest value when one is negative: rewrite scores can be) to `max` or the
 * largest value, on nice ticks.
 */
export function barChartSvg(
  groups: {
    label: string;
    section?: string;
    /** lower/upper: an interval drawn as an error bar (and included in the value axis). */
    bars: { name: string; value: number; lower?: number; upper?: number }[];
  }[],
  o: { title: string; yLabel: string; max?: number; xLabel?: string },
): string {
  const series = [...new Set(groups.flatMap((g) => g.bars.map((b) => b.name)))];
  const barW = 16, gap = 14, left = 56, top = 40, plotH = 200;
  // Wide enough for the bars and for the label (about 6 px per character at font size 10).
  const groupW = (g: (typeof groups)[number]) => Math.max(g.bars.length * barW, 6 * g.label.length) + gap;
  const width = Math.max(360, left + groups.reduce((s, g) => s + groupW(g), 0) + 20);
  const hasSections = groups.some((g) => g.section !== undefined);
  const values = groups.flatMap((g) => g.bars.flatMap((b) => [b.value, b.lower ?? NaN, b.upper ?? NaN]))
    .filter(Number.isFinite);
  // Counts are labelled as integers ("40", not "40.00").
  const integers = groups.every((g) =>
    g.bars.every((b) => !Number.isFinite(b.value) || Number.isInteger(b.value))
  );
  const label = (v: number) => (integers ? String(v) : v.toFixed(2));
  const yTicks = ticks(
    Math.min(0, ...values),
    o.max ?? Math.max(integers ? 1 : 1e-9, ...values),
    4,
    integers,
  );
  const step = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;
  const lo = Math.min(0, ...values) < yTicks[0] ? yTicks[0] - step : yTicks[0];
  const hi = Math.max(o.max ?? 0, ...values) > yTicks.at(-1)! ? yTicks.at(-1)! + step : yTicks.at(-1)!;
  const bottom = top + plotH, legendY = bottom + (hasSections ? 56 : 40) + (o.xLabel ? 14 : 0);
  const height = legendY + 18 * Math.ceil(series.length / 3) + 10;
  const y = (v: number) => bottom - ((Math.max(lo, Math.min(v, hi)) - lo) / (hi - lo)) * plotH;
  const axisY = y(0);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="18" text-anchor="middle" font-size="13">${escapeXml(o.title)}</text>`,
    `<text transform="translate(14 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">${
      escapeXml(o.yLabel)
    }</text>`,
  ];
  for (const v of [lo, ...yTicks.filter((t) => t > lo && t < hi), hi]) {
    parts.push(`<line x1="${left}" x2="${width - 10}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/>`);
    parts.push(
      `<text class="ytick" x="${left - 4}" y="${y(v) + 4}" text-anchor="end">${formatTick(v, step)}</text>`,
    );
  }
  let x = left + gap / 2;
  const sections: { name: string; from: number; to: number }[] = [];
  for (const g of groups) {
    const w = groupW(g) - gap, x0 = x + (w - g.bars.length * barW) / 2;
    g.bars.forEach((b, i) => {
      const color = PALETTE[series.indexOf(b.name) % PALETTE.length];
      const [y1, y2] = Number.isFinite(b.value)
        ? [y(Math.max(0, b.value)), y(Math.min(0, b.value))]
        : [axisY, axisY];
      const interval = Number.isFinite(b.lower) && Number.isFinite(b.upper)
        ? ` [${b.lower!.toFixed(3)}, ${b.upper!.toFixed(3)}]`
        : "";
      const text = `${g.section ? `${g.section}, ` : ""}${g.label}, ${b.name}: ${
        Number.isFinite(b.value) ? (integers ? String(b.value) : b.value.toFixed(3)) : "n/a"
      }${interval}`;
      parts.push(
        `<rect class="bar" x="${x0 + i * barW}" y="${y1}" width="${barW - 2}" height="${
          y2 - y1
        }" fill="${color}">` +
          `<title>${escapeXml(text)}</title></rect>`,
      );
      const cx = x0 + i * barW + barW / 2 - 1;
      if (interval) {
        parts.push(
          `<line class="errorbar" x1="${cx}" x2="${cx}" y1="${y(b.upper!)}" y2="${
            y(b.lower!)
          }" stroke="#333"/>`,
          `<line x1="${cx - 3}" x2="${cx + 3}" y1="${y(b.upper!)}" y2="${y(b.upper!)}" stroke="#333"/>`,
          `<line x1="${cx - 3}" x2="${cx + 3}" y1="${y(b.lower!)}" y2="${y(b.lower!)}" stroke="#333"/>`,
        );
      } else if (Number.isFinite(b.value)) {
        // Value labels only where no error bar would cross them.
        parts.push(
          `<text x="${cx}" y="${b.value >= 0 ? y1 - 3 : y2 + 9}" text-anchor="middle" font-size="8">${
            label(b.value)
          }</text>`,
        );
      }
    });
    parts.push(
      `<text x="${x + w / 2}" y="${bottom + 14}" text-anchor="middle" font-size="10">${
        escapeXml(g.label)
      }</text>`,
    );
    if (g.section !== undefined) {
      const last = sections.at(-1);
      if (last && last.name === g.section) last.to = x + w;
      else sections.push({ name: g.section, from: x, to: x + w });
    }
    x += groupW(g);
  }
  parts.push(`<line x1="${left}" x2="${width - 10}" y1="${axisY}" y2="${axisY}" stroke="#999"/>`);
  if (o.xLabel) {
    parts.push(
      `<text x="${(left + width - 10) / 2}" y="${bottom + (hasSections ? 48 : 32)}" text-anchor="middle">${
        escapeXml(o.xLabel)
      }</text>`,
    );
  }
  for (const sec of sections) {
    parts.push(
      `<line x1="${sec.from}" x2="${sec.to}" y1="${bottom + 20}" y2="${bottom + 20}" stroke="#999"/>`,
    );
    parts.push(
      `<text x="${(sec.from + sec.to) / 2}" y="${bottom + 33}" text-anchor="middle" font-size="11">${
        escapeXml(sec.name)
      }</text>`,
    );
  }
  series.forEach((name, i) => {
    const lx = left + (i % 3) * 160, ly = legendY + 18 * Math.floor(i / 3);
    parts.push(
      `<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${PALETTE[i % PALETTE.length]}"/>`,
    );
    parts.push(`<text x="${lx + 14}" y="${ly}">${escapeXml(name)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}

/** A horizontal bar of `width` characters for a probability in [0, 1] (eighth-blocks, or "#"). */
export function terminalBar(p: number, width: number, unicode: boolean): string {
  const v = Math.max(0, Math.min(1, Number.isFinite(p) ? p : 0)) * width;
  if (!unicode) return "#".repeat(Math.round(v)).padEnd(width);
  const full = Math.floor(v), eighths = Math.round((v - full) * 8);
  const partial = eighths > 0 && full < width ? " ▏▎▍▌▋▊▉█"[eighths] : "";
  return ("█".repeat(full) + partial).padEnd(width);
}
