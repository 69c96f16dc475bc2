// The test suite's runner (`./locus task test`): every test file under tests/ in a `deno test` process
// of its own, as many at a time as the machine has cores (DENO_JOBS overrides).
//
// Why not `deno test --parallel tests/`: Deno's WebGPU on Mesa's GL driver (Locus's default backend
// without a GPU) corrupts the C heap when a process holds GL-backed instances in several isolates, as
// `deno test` does with one isolate per file: the tests pass, then glibc aborts the process at exit
// ("corrupted size vs. prev_size in fastbins", exit code 134). Six small GPU test files in one process
// aborted in 13% of runs, with or without --parallel; on Vulkan never (bench/RESULTS.md, "2026-12-06
// (third session)"). One file per process removes that. What remains is rarer and outside Locus too:
// `deno test` runs a file on a worker thread, and that thread's GL state is torn down while the process
// exits (libglvnd's EGL destructor on the main thread, the worker's thread-local destructors on its
// own); one GPU file alone aborted at exit in 1-3% of runs on a loaded machine, a `deno run` script
// doing the same work never (0 of 120), so Locus's commands are not affected. The same race also ends
// a process with a segmentation fault (exit code 139) after the summary line of its passed tests was
// printed (readback_test.ts, once in a fresh clone's suite). A file whose process aborts (SIGABRT) with no
// failed test, or faults (SIGSEGV) with every test it started passed, therefore runs again, at most
// twice; the summary names it. A fault inside a test (one left without its result) fails the suite.
//
//   ./locus task test                       all files
//   ./locus task test --filter "ROME"       extra arguments go to every file's `deno test`
//
// Type checking runs once over all files first (one module graph), then each file runs unchecked.
// A file's output is printed whole when it ends, so that concurrent files never interleave.

const deno = Deno.execPath();

/** One file's outcome: counts from `deno test`'s summary line, its exit code and how long it took. */
export interface FileResult {
  file: string;
  passed: number;
  failed: number;
  code: number;
  seconds: number;
  output: string;
  /** The exit code and last line of each earlier run of this file that crashed at exit with no failed test
   *  (then rerun). */
  aborts: string[];
}

/** SIGABRT's exit status (128 + 6): glibc's reaction to a corrupted heap. */
const ABORTED = 134;
/** SIGSEGV's exit status (128 + 11). */
const FAULTED = 139;
/** Runs after the first when a file's process crashes at exit with no failed test. */
const RERUNS_AFTER_ABORT = 2;

// deno test colours its output; the counts are read without the colour codes.
// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** Reads "ok | 12 passed (2 steps) | 0 failed (1s)" (or FAILED | ...) from the end of `deno test`'s output. */
export function summaryCounts(output: string): { passed: number; failed: number } | null {
  const lines = output.replace(ANSI, "").trimEnd().split("\n").reverse();
  const line = lines.find((l) => /^(ok|FAILED) \| \d+ passed/.test(l));
  if (!line) return null;
  return { passed: Number(/(\d+) passed/.exec(line)![1]), failed: Number(/(\d+) failed/.exec(line)![1]) };
}

function lastLine(output: string): string {
  return output.replace(ANSI, "").trimEnd().split("\n").at(-1) ?? "";
}

/** Why a file counts as failed, or null when it passed: failed tests, or a non-zero exit. */
export function failure(r: FileResult): string | null {
  if (r.failed > 0) return `${r.failed} failed`;
  if (r.code !== 0) {
    return `exit code ${r.code}${summaryCounts(r.output) ? " after its tests passed" : ""}: ${
      lastLine(r.output)
    }`;
  }
  return null;
}

/** The teardown crash described at the top: SIGABRT with no test reported failed, or SIGSEGV with none
 *  failed and none left running (the output ends with a passed test or the passed summary). */
function crashedAtExitWithoutFailure(r: FileResult): boolean {
  if (r.failed > 0 || /\.\.\. .*FAILED/.test(r.output.replace(ANSI, ""))) return false;
  return r.code === ABORTED || (r.code === FAULTED && /\.\.\. ok \(|^ok \| /.test(lastLine(r.output)));
}

const TEST_FILE = /(^|[._/])test\.(ts|tsx|mts|js|mjs|jsx)$/;

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The files `deno test DIR` would run: test.ts, *_test.ts and *.test.ts (and .tsx/.js/.mjs/.jsx), in every folder. */
async function testFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) files.push(...await testFiles(path));
    else if (entry.isFile && TEST_FILE.test(entry.name)) files.push(path);
  }
  return files.sort();
}

/** Where and how a `deno test` process runs: its arguments after `test`, folder and extra environment. */
export interface DenoTestRun {
  /** What the results name it by (a file, or a description). */
  name: string;
  args: string[];
  cwd?: string;
  env?: Record<string, string>;
}

async function denoTestOnce(run: DenoTestRun): Promise<FileResult> {
  const start = performance.now();
  const { code, stdout, stderr } = await new Deno.Command(deno, {
    args: ["test", ...run.args],
    cwd: run.cwd,
    // glibc writes an abort's message to the terminal when there is one; this keeps it in the output.
    env: { LIBC_FATAL_STDERR_: "1", ...run.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  const output = decoder.decode(stdout) + decoder.decode(stderr);
  const counts = summaryCounts(output) ?? { passed: 0, failed: 0 };
  return { file: run.name, ...counts, code, seconds: (performance.now() - start) / 1000, output, aborts: [] };
}

/**
 * Runs `deno test`, again (at most RERUNS_AFTER_ABORT times) while its process crashes at exit with no
 * failed test: the GL teardown race described at the top. Also for tests that start `deno test`
 * themselves.
 */
export async function denoTest(run: DenoTestRun): Promise<FileResult> {
  const aborts: string[] = [];
  for (let attempt = 0;; attempt++) {
    const r = await denoTestOnce(run);
    if (!crashedAtExitWithoutFailure(r) || attempt === RERUNS_AFTER_ABORT) return { ...r, aborts };
    aborts.push(`exit code ${r.code}: ${lastLine(r.output)}`);
    console.error(
      `${run.name}: ${
        r.code === ABORTED ? "aborted" : "faulted"
      } (exit code ${r.code}) with no failed test: ${lastLine(r.output)}; running it again`,
    );
  }
}

function minutes(seconds: number): string {
  const whole = Math.round(seconds);
  return whole >= 60 ? `${Math.floor(whole / 60)}m${whole % 60}s` : `${whole}s`;
}

/**
 * Type-checks every test file of `dir` at once, then runs each in its own `deno test` process, `jobs`
 * at a time, printing each file's output whole as it ends and a summary line at the end. Returns every
 * file's result (none when the type check failed or `dir` has no test file) and whether the suite passed.
 */
export async function runSuite(
  options: { dir: string; args?: string[]; jobs?: number },
): Promise<{ ok: boolean; results: FileResult[] }> {
  const start = performance.now();
  const args = options.args ?? [];
  const files = await testFiles(options.dir);
  if (files.length === 0) {
    console.error(`${options.dir}: no test files (test.ts, *_test.ts, *.test.ts)`);
    return { ok: false, results: [] };
  }
  const jobs = Math.min(options.jobs ?? 1, files.length);
  const check = await new Deno.Command(deno, { args: ["check", "--quiet", ...files] }).spawn().status;
  if (!check.success) return { ok: false, results: [] };

  const results: FileResult[] = [];
  const queue = [...files];
  const worker = async () => {
    for (let file = queue.shift(); file; file = queue.shift()) {
      const r = await denoTest({ name: file, args: ["-A", "--no-check", file, ...args] });
      results.push(r);
      await Deno.stdout.write(new TextEncoder().encode(r.output));
      const why = failure(r);
      if (why) console.error(`${r.file}: ${why}`);
    }
  };
  await Promise.all(Array.from({ length: jobs }, worker));

  const passed = results.reduce((s, r) => s + r.passed, 0);
  const failedTests = results.reduce((s, r) => s + r.failed, 0);
  const failedFiles = results.filter((r) => failure(r) !== null);
  const slowest = [...results].sort((a, b) => b.seconds - a.seconds).slice(0, 3)
    .map((r) => `${r.file} ${minutes(r.seconds)}`).join(", ");
  const verdict = failedFiles.length ? "FAILED" : "ok";
  const seconds = (performance.now() - start) / 1000;
  console.log(
    `\n${verdict} | ${files.length} files, ${jobs} at a time | ${passed} passed | ${failedTests} failed | ` +
      `${minutes(seconds)} (slowest: ${slowest})`,
  );
  for (const r of failedFiles) console.log(`  ${r.file}: ${failure(r)}`);
  for (const r of results.filter((r) => r.aborts.length && !failure(r))) {
    console.log(
      `  ${r.file}: passed after ${r.aborts.length} crash(es) at exit with no failed test (${
        r.aborts.join("; ")
      })`,
    );
  }
  return { ok: failedFiles.length === 0, results };
}

if (import.meta.main) {
  // Arguments go to every file's run, so a test file among them would run once per file.
  const file = Deno.args.find((a) => !a.startsWith("-") && TEST_FILE.test(a) && isFile(a));
  if (file) {
    console.error(`${file}: the suite runs every file; one file runs with ./locus test -A ${file}`);
    Deno.exit(2);
  }
  const jobs = Number(Deno.env.get("DENO_JOBS")) || navigator.hardwareConcurrency || 1;
  const { ok } = await runSuite({ dir: "tests", args: Deno.args, jobs });
  Deno.exit(ok ? 0 : 1);
}
