// ./locus task bench: every benchmark section, each a standalone script run in its own process
// (so one section's GPU memory never skews the next). Extra arguments go to every section.
//   kernels.ts  matmul GFLOP/s and memory-bound kernel GB/s on GPT-2 shapes
//   forward.ts  forward tokens/s for GPT-2 small/medium/XL shapes vs numpy; training throughput
//   training.ts the embedded model's training loop against the reference loop (same bits), ms per step
//   tracing.ts  causal-tracing grid time and the speedup of reusing the corrupted run
//   editing.ts  time per ROME edit, MEMIT batch and FT-L edit
//   attribution.ts  layer-selection time: LGA vs causal tracing vs integrated gradients vs brute force
//   science.ts  a ROME sweep with evaluation (batched vs sequential) and a trace grid, next to PyTorch
//   study.ts    the study's wall time (--quick and every method x problem x layer on 6 facts) per process count
import { preferredBackend } from "../engine/io.ts";

const sections = [
  "kernels.ts",
  "forward.ts",
  "training.ts",
  "tracing.ts",
  "editing.ts",
  "attribution.ts",
  "science.ts",
  "study.ts",
];
let failed = 0;
for (const file of sections) {
  const path = new URL(`./${file}`, import.meta.url).pathname;
  try {
    await Deno.stat(path);
  } catch {
    console.log(`(bench/${file} does not exist yet)`);
    continue;
  }
  console.log(`\n## bench/${file}\n`);
  const status = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", path, ...Deno.args] }).spawn()
    .status;
  if (!status.success) {
    console.error(`bench/${file} failed with exit code ${status.code}`);
    failed++;
  }
}
// Linux offers WebGPU through Vulkan and through GL; on a software adapter they differ in speed
// (engine/io.ts preferredBackend picks GL there), so the forward is timed on the other one too.
if (Deno.build.os === "linux" && !Deno.env.get("DENO_WEBGPU_BACKEND")) {
  const other = preferredBackend() === "gl" ? "vulkan" : "gl";
  console.log(`\n## bench/forward.ts on the other backend (DENO_WEBGPU_BACKEND=${other})\n`);
  const path = new URL("./forward.ts", import.meta.url).pathname;
  const status = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", path, "--shapes", "gpt2", "--no-training", ...Deno.args],
    env: { DENO_WEBGPU_BACKEND: other },
  }).spawn().status;
  if (!status.success) console.log(`(no ${other} adapter here: exit code ${status.code})`);
}
Deno.exit(failed ? 1 : 0);
