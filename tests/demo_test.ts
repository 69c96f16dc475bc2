// deno task demo end to end on a tiny model folder made here: the five steps are shown, the trace's
// SVG is written, the edit is undone bit for bit, and bad input gets a clear error.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { makeTinyKb } from "./fixtures_tiny_kb.ts";
import { runScript, type ScriptRun } from "./util.ts";

const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const kb = await makeTinyKb(await getGpu(), `${dir}/model`);

function demo(...args: string[]): Promise<ScriptRun> {
  return runScript(
    "experiments/demo.ts",
    "--model",
    kb.dir,
    "--stats-dir",
    `${dir}/stats`,
    "--out",
    `${dir}/demo`,
    "--v-steps",
    "4",
    ...args,
  );
}

Deno.test("demo: fact, trace, layer choice, ROME edit, undo; the first known fact by default", async () => {
  const r = await demo();
  assert.equal(r.code, 0, r.stderr);
  const first = kb.known[0];
  assert.match(r.stdout, new RegExp(`1\\. The fact \\(counterfact:${first}\\): ".*" -> \\w+`));
  assert.match(r.stdout, /The model answers: \w+ \d+(\.\d)?%, \w+ \d+(\.\d)?%, \w+ \d+(\.\d)?%/);
  assert.match(r.stdout, /2\. Causal tracing: .*\n.*\n {3}residual stream \(window 1\)/);
  assert.match(r.stdout, /MLP output \(window 1\)/);
  assert.match(
    r.stdout,
    /3\. Where to edit\? at the last subject word, restoring the MLP output helps most at layer \d \(effect -?\d\.\d{3}\) \(Layer Gradient Analysis on \d+ other facts picks layer \d\)/,
  );
  assert.match(r.stdout, /4\. ROME rewrites ".*" to answer \w+/);
  for (const label of ["the fact", "a paraphrase", "a neighbour"]) {
    assert.match(r.stdout, new RegExp(` {3}${label} +".*"\\n +before: .*\\n +after: {2}.*`));
  }
  assert.match(
    r.stdout,
    /Scores \(1 = perfect\): rewrite -?\d\.\d\d, paraphrase -?\d\.\d\d, neighbour unchanged \d\.\d\d/,
  );
  assert.match(r.stdout, /5\. Undo: .*\n {3}Identical to before the edit, to the last bit\./);
  assert.match(r.stdout, /Done in \d+\.\d s\./);
  const svg = await Deno.readTextFile(`${dir}/demo/trace-counterfact-${first}.svg`);
  assert.match(svg, /^<svg /);
  assert.equal(svg.split('class="panel"').length - 1, 3, "residual, MLP and attention panels");
});

Deno.test("demo: --case and --strategy lga", async () => {
  const id = kb.known[2];
  const r = await demo("--case", String(id), "--strategy", "lga");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`1\\. The fact \\(counterfact:${id}\\)`));
  const m = /Layer Gradient Analysis on \d+ other facts picks layer (\d) .*\n {3}we edit MLP layer (\d)\./
    .exec(r.stdout);
  assert.ok(m, r.stdout);
  assert.equal(m[1], m[2], "the edit is at LGA's layer");
});

Deno.test("demo: clear errors for an unknown case, strategy or model folder", async () => {
  const bad = await demo("--case", "999");
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /demo: --case 999: .*counterfact\.json has no case_id 999/);
  assert.match(
    (await demo("--strategy", "random")).stderr,
    /--strategy must be "lga" or "tracing", got "random"/,
  );
  const none = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../experiments/demo.ts", import.meta.url).pathname,
      "--model",
      `${dir}/nothing`,
    ],
    stderr: "piped",
  }).output();
  assert.match(new TextDecoder().decode(none.stderr), /demo: .*nothing\/model\.safetensors is missing/);
});
