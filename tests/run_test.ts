// The suite's runner (tests/run.ts): one process per file, failures and crashes after passing tests
// both fail the suite, extra arguments reach every file.
import assert from "node:assert/strict";
import { failure, runSuite, summaryCounts } from "./run.ts";
import { runScript } from "./util.ts";

async function suiteDir(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "locus-run-test-" });
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(`${dir}/${name}`, text);
  return dir;
}

const passing = `Deno.test("adds", () => { if (1 + 1 !== 2) throw new Error("no"); });\n` +
  `Deno.test("other", () => {});\n`;

Deno.test("summaryCounts reads deno test's last summary line, with steps, colours and filtered tests", () => {
  assert.deepEqual(
    summaryCounts("x\n\x1b[0m\x1b[32mok\x1b[0m | 700 passed (2 steps) | 0 failed \x1b[0m(2m14s)\n"),
    {
      passed: 700,
      failed: 0,
    },
  );
  assert.deepEqual(
    summaryCounts("FAILED | 3 passed | 2 failed | 4 filtered out (1s)\n\nerror: Test failed"),
    {
      passed: 3,
      failed: 2,
    },
  );
  assert.equal(summaryCounts("error: Module not found"), null);
});

Deno.test("runSuite: a failed test and a process that aborts after its tests passed both fail the suite", async () => {
  const dir = await suiteDir({
    "a_test.ts": passing,
    "b_test.ts": `Deno.test("breaks", () => { throw new Error("broken on purpose"); });\n`,
    // Aborts (SIGABRT, as glibc does on finding a corrupted heap) as its process ends, after its tests
    // passed, every time: run three times, then failed.
    "c_test.ts": `globalThis.addEventListener("unload", () => Deno.kill(Deno.pid, "SIGABRT"));\n` + passing,
    "helper.ts": `export const notATest = 1;\n`,
  });
  try {
    const { ok, results } = await runSuite({ dir, jobs: 2 });
    assert.equal(ok, false);
    const byFile = Object.fromEntries(results.map((r) => [r.file.slice(dir.length + 1), r]));
    assert.deepEqual(Object.keys(byFile).sort(), ["a_test.ts", "b_test.ts", "c_test.ts"]);
    assert.deepEqual([byFile["a_test.ts"].passed, byFile["a_test.ts"].failed, byFile["a_test.ts"].code], [
      2,
      0,
      0,
    ]);
    assert.deepEqual([byFile["b_test.ts"].passed, byFile["b_test.ts"].failed], [0, 1]);
    assert.equal(byFile["c_test.ts"].failed, 0);
    assert.equal(byFile["c_test.ts"].code, 134);
    assert.equal(byFile["c_test.ts"].aborts.length, 2, "two reruns after the first abort");
    assert.equal(byFile["b_test.ts"].aborts.length, 0, "a failed test is never rerun");
    assert.match(failure(byFile["c_test.ts"])!, /^exit code 134/);
    assert.equal(failure(byFile["a_test.ts"]), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runSuite: a file whose process aborted once with no failed test passes on its rerun, named in the results", async () => {
  const dir = await suiteDir({
    "a_test.ts": passing,
    // Aborts at its first run only (a marker file beside it remembers).
    "b_test.ts": `const marker = new URL("./aborted-once", import.meta.url);\n` +
      `if (!(await Deno.stat(marker).catch(() => null))) {\n` +
      `  await Deno.writeTextFile(marker, "");\n` +
      `  globalThis.addEventListener("unload", () => Deno.kill(Deno.pid, "SIGABRT"));\n` +
      `}\n` + passing,
  });
  try {
    const { ok, results } = await runSuite({ dir, jobs: 2 });
    assert.equal(ok, true);
    const b = results.find((r) => r.file.endsWith("b_test.ts"))!;
    assert.deepEqual([b.passed, b.failed, b.code, b.aborts.length], [2, 0, 0, 1]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// A real segmentation fault: libc's strlen of a null pointer (V8 handles a SIGSEGV merely sent to the
// process, so a kill would not do).
const faulting =
  `const libc = Deno.dlopen("libc.so.6", { strlen: { parameters: ["pointer"], result: "usize" } });\n` +
  `const fault = () => { libc.symbols.strlen(null); };\n`;

Deno.test("runSuite: a segmentation fault after every test passed runs the file again; one during a test fails it at once", async () => {
  const dir = await suiteDir({
    // Faults (a null pointer read through FFI: SIGSEGV, exit code 139) as its process ends, after its
    // tests passed, at its first run only. Deno prints the tests' results on another thread, which the
    // fault could cut short (the last result lost, 1 run in 6 here): it waits for them to be written.
    "a_test.ts": faulting + `const marker = new URL("./faulted-once", import.meta.url);\n` +
      `if (!(await Deno.stat(marker).catch(() => null))) {\n` +
      `  await Deno.writeTextFile(marker, "");\n` +
      `  globalThis.addEventListener("unload", () => {\n` +
      `    const until = Date.now() + 300;\n` +
      `    while (Date.now() < until);\n` +
      `    fault();\n` +
      `  });\n` +
      `}\n` + passing,
    // The same fault inside a test, which is left without its result: never rerun.
    "b_test.ts": faulting + `Deno.test("crashes", fault);\n`,
  });
  try {
    const { ok, results } = await runSuite({ dir, jobs: 2 });
    assert.equal(ok, false);
    const [a, b] = ["a_test.ts", "b_test.ts"].map((name) => results.find((r) => r.file.endsWith(name))!);
    assert.deepEqual([a.passed, a.failed, a.code, a.aborts.length], [2, 0, 0, 1]);
    assert.match(a.aborts[0], /^exit code 139: /);
    assert.deepEqual([b.code, b.aborts.length], [139, 0]);
    assert.match(failure(b)!, /^exit code 139/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runSuite: passing files pass; extra arguments such as --filter reach every file", async () => {
  const dir = await suiteDir({ "a_test.ts": passing, "b_test.ts": passing });
  // Files in sub-folders and named as deno test names them run too, as under `deno test DIR`.
  await Deno.mkdir(`${dir}/nested`);
  await Deno.writeTextFile(`${dir}/nested/c.test.ts`, passing);
  try {
    const all = await runSuite({ dir, jobs: 1 });
    assert.equal(all.ok, true);
    assert.deepEqual(all.results.map((r) => r.file.slice(dir.length + 1)).sort(), [
      "a_test.ts",
      "b_test.ts",
      "nested/c.test.ts",
    ]);
    assert.equal(all.results.reduce((s, r) => s + r.passed, 0), 6);
    const filtered = await runSuite({ dir, jobs: 2, args: ["--filter", "adds"] });
    assert.equal(filtered.ok, true);
    assert.deepEqual(filtered.results.map((r) => r.passed), [1, 1, 1]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runSuite: a folder without test files fails rather than passing with nothing run", async () => {
  const dir = await suiteDir({ "helper.ts": `export const notATest = 1;\n` });
  try {
    assert.deepEqual(await runSuite({ dir, jobs: 2 }), { ok: false, results: [] });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runSuite: a file that does not type-check stops the suite before any file runs", async () => {
  const dir = await suiteDir({
    "a_test.ts": passing,
    "b_test.ts": `const n: number = "text";\nDeno.test("t", () => {});\n`,
  });
  try {
    assert.deepEqual(await runSuite({ dir, jobs: 2 }), { ok: false, results: [] });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("./locus task test with a test file among its arguments refuses and says how to run one file", async () => {
  const out = await runScript("tests/run.ts", "--filter", "x", "tests/run_test.ts");
  assert.equal(out.code, 2);
  assert.match(out.stderr, /tests\/run_test\.ts: .*\.\/locus test -A tests\/run_test\.ts/);
});
