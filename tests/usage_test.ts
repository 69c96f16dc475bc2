// Usage texts, help output and docs name the command people actually run: `./locus task NAME` (the
// wrapper that installs the pinned Deno), never a bare `deno task NAME`, which needs a Deno on the PATH
// and skips the wrapper's adapter checks. Scans every source and document a user reads.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));

/** Every .ts and .md file under `dir` (relative to the repository root). */
async function* files(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(`${root}${dir}`)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) yield* files(path);
    else if (/\.(ts|md)$/.test(e.name)) yield path;
  }
}

Deno.test("usage texts and docs say ./locus task, never deno task", async () => {
  const offenders: string[] = [];
  let scanned = 0;
  for (const dir of ["engine", "experiments", "bench", "docs"]) {
    for await (const path of files(dir)) {
      scanned++;
      const lines = (await Deno.readTextFile(`${root}${path}`)).split("\n");
      lines.forEach((line, i) => {
        if (/\bdeno task\b/.test(line)) offenders.push(`${path}:${i + 1}: ${line.trim()}`);
      });
    }
  }
  const readme = await Deno.readTextFile(`${root}README.md`);
  if (/\bdeno task\b/.test(readme)) offenders.push("README.md");
  assert.ok(scanned > 50, `only ${scanned} files scanned: the folders moved?`);
  assert.deepEqual(offenders, []);
});
