// Shared test helpers: seeded random data, tolerant comparisons, and running a CLI script.
import assert from "node:assert/strict";
import { GPU_SPLIT_K, type MatmulTiles } from "../engine/kernel_choice.ts";
import { mulberry32 as rng } from "../engine/random.ts";
import type { StoredResult } from "../experiments/study/store.ts";
import type { Gpu } from "../engine/gpu.ts";

export { rng };

/** The matmul tiles every GPU with WebGPU's default limits should get (engine/kernel_choice.ts): 64x64
 *  workgroup tiles of 16x16 invocations of 4x4, 8-deep k-tiles, split-K. */
export const GPU_TILES: MatmulTiles = {
  TM: 4,
  TN: 4,
  WG_X: 16,
  WG_Y: 16,
  strategy: "workgroup",
  BK: 8,
  splitK: GPU_SPLIT_K,
};

/** n uniform values in [-scale, scale). */
export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, `length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what = "value",
): void {
  const d = maxAbsDiff(actual, expected);
  assert.ok(d <= tol, `${what}: max abs difference ${d} > ${tol}`);
}

export interface ScriptRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno run -A <script> ...args` (script relative to the repository root) and collects its output. */
export function runScript(script: string, ...args: string[]): Promise<ScriptRun> {
  return runScriptEnv({}, script, ...args);
}

/** runScript with extra environment variables. */
export async function runScriptEnv(
  env: Record<string, string>,
  script: string,
  ...args: string[]
): Promise<ScriptRun> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`../${script}`, import.meta.url).pathname, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Every position but the last of each prompt (row b*T + t of a batch of T slots) and the token after it:
 *  the rows and targets of a summed next-token cross-entropy. */
export function nextTokenTargets(prompts: number[][], T: number): { rows: number[]; targets: number[] } {
  const rows: number[] = [], targets: number[] = [];
  prompts.forEach((p, b) =>
    p.slice(0, -1).forEach((_, t) => {
      rows.push(b * T + t);
      targets.push(p[t + 1]);
    })
  );
  return { rows, targets };
}

/** The same result from two runs: same key, and metrics (a mass edit's per fact) within float noise of each other; the unedited
 *  model's essence texts and fluency generations are seeded, so their measurements repeat exactly. */
export function assertSameMetrics(a: StoredResult, b: StoredResult): void {
  const close = (x: unknown, y: unknown, what: string) =>
    assert.ok(
      typeof x === "number" && typeof y === "number" && Math.abs(x - y) <= 1e-4 + 1e-3 * Math.abs(x),
      `${a.key}: ${what} ${x} vs ${y}`,
    );
  for (const name of ["rewrite", "paraphrase", "neighborhood"]) {
    const [x, y] = [a.metrics[name], b.metrics[name]];
    if (x === undefined) continue;
    // A mass edit's scores are per fact.
    if (Array.isArray(x) && Array.isArray(y) && x.length === y.length) {
      x.forEach((v, i) => close(v, y[i], `${name}[${i}]`));
    } else close(x, y, name);
  }
  const [ea, eb] = [a, b].map((r) => r.metrics.essence as Record<string, number> | null | undefined);
  const [fa, fb] = [a, b].map((r) => r.metrics.fluency as Record<string, number> | null | undefined);
  assert.equal(ea?.pre, eb?.pre, `${a.key}: essence before the edit`);
  assert.equal(fa?.pre, fb?.pre, `${a.key}: fluency before the edit`);
  if (ea) close(ea.post, eb!.post, "essence after the edit");
}

/** Runs the entry point `main` of a WGSL shader once over `workgroups` workgroups, `resources` bound at
 *  bindings 0, 1, ... of group 0: the tests of the driver's code generation dispatch raw shaders this way. */
export function dispatchShader(
  gpu: Gpu,
  code: string,
  resources: GPUBindingResource[],
  workgroups: number,
): void {
  const pipeline = gpu.device.createComputePipeline({
    layout: "auto",
    compute: { module: gpu.device.createShaderModule({ code }), entryPoint: "main" },
  });
  const bindGroup = gpu.device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: resources.map((resource, binding) => ({ binding, resource })),
  });
  const encoder = gpu.device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(workgroups);
  pass.end();
  gpu.device.queue.submit([encoder.finish()]);
}
