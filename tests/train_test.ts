// deno task train under faults: killed with SIGKILL at seeded random moments (anywhere, including
// mid-checkpoint) and resumed, it ends with a model.safetensors byte-identical to an uninterrupted
// run's and the same loss curve; bad options and a foreign manifest are clear errors (no stack trace).
import assert from "node:assert/strict";
import { rng, runScript, type ScriptRun } from "./util.ts";

// A tiny model trains in seconds; a checkpoint every 3 steps gives many moments to be killed at.
const STEPS = 45;
const ARGS = [
  "--steps",
  String(STEPS),
  "--layers",
  "1",
  "--d",
  "16",
  "--heads",
  "2",
  "--seq-len",
  "24",
  "--batch",
  "4",
  "--checkpoint-every",
  "3",
];
const SCRIPT = "experiments/commands/train.ts";

const dir = await Deno.makeTempDir({ prefix: "locus-train-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

async function train(name: string): Promise<ScriptRun> {
  const run = await runScript(
    SCRIPT,
    ...ARGS,
    "--out",
    `${dir}/${name}/out`,
    "--run-dir",
    `${dir}/${name}/run`,
  );
  assert.equal(run.code, 0, `train failed:\n${run.stderr}`);
  return run;
}

/** The step the manifest names, or -1 while there is none (or it is being replaced). */
function checkpointStep(runDir: string): number {
  try {
    return JSON.parse(Deno.readTextFileSync(`${runDir}/checkpoint.json`)).step;
  } catch {
    return -1;
  }
}

/** Asserts that the file at `path` holds exactly `expected` (no diff of a megabyte on failure). */
async function assertSameBytes(path: string, expected: Uint8Array): Promise<void> {
  const bytes = await Deno.readFile(path);
  assert.ok(bytes.length === expected.length && bytes.every((b, i) => b === expected[i]), `${path} differs`);
}

interface Manifest {
  step: number;
  losses: [number, number][];
}

Deno.test("train: killed with SIGKILL at random moments and resumed, the model is bit-identical", async () => {
  const first = await train("reference");
  // Progress on stderr: a bar with the loss, ending at 100% (and an ETA on the lines before the end).
  const lines = first.stderr.trimEnd().split("\n");
  assert.match(
    lines.at(-1)!,
    new RegExp(`^training \\[#{20}\\] ${STEPS}/${STEPS} 100%  \\S+ elapsed  epoch \\d+  loss \\d\\.\\d{4}`),
  );
  assert.ok(
    lines.slice(0, -1).every((l) =>
      /^training \[#*-*\] \d+\/\d+ \d+% {2}\S+ elapsed, ETA \S+ {2}epoch/.test(l)
    ),
    first.stderr,
  );
  const reference = await Deno.readFile(`${dir}/reference/out/model.safetensors`);
  const referenceLosses =
    (JSON.parse(await Deno.readTextFile(`${dir}/reference/run/checkpoint.json`)) as Manifest)
      .losses;

  const runDir = `${dir}/killed/run`;
  const random = rng(20261203);
  const resumedAt: number[] = [];
  for (let kill = 0; kill < 4; kill++) {
    // Wait until the run has passed a random step, then a random extra delay: the kill lands
    // anywhere between (or inside) checkpoint writes.
    const target = 1 + Math.floor(random() * (STEPS - 2));
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL(`../${SCRIPT}`, import.meta.url).pathname,
        ...ARGS,
        "--out",
        `${dir}/killed/out`,
        "--run-dir",
        runDir,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    let exited = false;
    child.status.then(() => exited = true);
    while (!exited && checkpointStep(runDir) < target) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, random() * 150));
    if (!exited) child.kill("SIGKILL");
    const status = await child.status;
    if (status.signal === "SIGKILL") resumedAt.push(checkpointStep(runDir));
  }
  assert.ok(resumedAt.some((s) => s > 0 && s < STEPS), `no kill landed mid-training (${resumedAt})`);
  // What a kill mid-checkpoint leaves: a temp file of the weights or of the manifest, and weights
  // written before their manifest (the kills above leave these only at some moments: the manifest's
  // temp file was left by one whole-suite run in three on a loaded machine).
  await Deno.writeTextFile(`${runDir}/checkpoint-${STEPS}.safetensors.tmp-1-x`, "torn");
  await Deno.writeTextFile(`${runDir}/checkpoint.json.tmp-1-x`, "torn");
  // And a kill while the model folder is written leaves a temp file there.
  await Deno.mkdir(`${dir}/killed/out`, { recursive: true });
  await Deno.writeTextFile(`${dir}/killed/out/model.safetensors.tmp-1-x`, "torn");
  await Deno.writeTextFile(`${runDir}/checkpoint-${STEPS + 3}.safetensors`, "not named by the manifest");
  const resumed = await train("killed");
  assert.match(resumed.stdout, /resumed from .* at step \d+/);
  assert.match(resumed.stderr, new RegExp(`training \\[#{20}\\] ${STEPS}/${STEPS} 100%`));

  await assertSameBytes(`${dir}/killed/out/model.safetensors`, reference);
  const manifest = JSON.parse(await Deno.readTextFile(`${runDir}/checkpoint.json`)) as Manifest;
  assert.deepEqual(manifest.losses, referenceLosses, "loss curves differ");
  // Only the manifest and the one weights file it names are left: no temp files, no stale weights.
  const files = [...Deno.readDirSync(runDir)].map((e) => e.name).sort();
  assert.deepEqual(files, [`checkpoint-${STEPS}.safetensors`, "checkpoint.json"]);
  // The model folder holds exactly the files a run writes.
  assert.deepEqual([...Deno.readDirSync(`${dir}/killed/out`)].map((e) => e.name).sort(), [
    "MODEL_CARD.md",
    "config.json",
    "corpus.txt",
    "counterfact.json",
    "known_facts.json",
    "loss_curve.svg",
    "model.safetensors",
    "tokenizer.json",
    "zsre.json",
  ]);

  // A kill after the last checkpoint (while evaluating or writing the model folder) leaves a finished
  // manifest: rerun, nothing is trained, the bar still ends at 100% and the model is the same.
  const rerun = await train("reference");
  assert.match(rerun.stdout, new RegExp(`resumed from .* at step ${STEPS}\n`));
  assert.match(
    rerun.stderr,
    new RegExp(`^training \\[#{20}\\] ${STEPS}/${STEPS} 100%  \\S+ elapsed  no steps left\n$`),
  );
  await assertSameBytes(`${dir}/reference/out/model.safetensors`, reference);
});

Deno.test("train: bad options and a foreign manifest are one-line errors naming the option or file", async () => {
  for (
    const [args, message] of [
      [["--steps", "1.5"], /^train: --steps must be a positive integer, got "1\.5"\n$/],
      [["--batch", "0"], /^train: --batch must be a positive integer, got "0"\n$/],
      [["--seed=-1"], /^train: --seed must be an integer >= 0, got "-1"\n$/],
      [["--lr", "abc"], /^train: --lr must be a positive number, got "abc"\n$/],
      [["--d", "10", "--heads", "4"], /^train: --d 10 must be a multiple of --heads 4\n$/],
      [["--stepz", "3"], /^train: .*stepz/],
    ] as [string[], RegExp][]
  ) {
    const run = await runScript(SCRIPT, ...args, "--out", `${dir}/bad/out`, "--run-dir", `${dir}/bad/run`);
    assert.equal(run.code, 1, args.join(" "));
    assert.match(run.stderr, message);
  }
  await Deno.mkdir(`${dir}/foreign`, { recursive: true });
  await Deno.writeTextFile(`${dir}/foreign/checkpoint.json`, JSON.stringify({ step: 3, weights: "../x" }));
  const run = await runScript(SCRIPT, ...ARGS, "--out", `${dir}/foreign-out`, "--run-dir", `${dir}/foreign`);
  assert.equal(run.code, 1);
  assert.match(run.stderr, /foreign\/checkpoint\.json: field "weights" must be a file name/);
  assert.ok(!run.stderr.includes("    at "), `a stack trace: ${run.stderr}`);
});
