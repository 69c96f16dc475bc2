// The engine runs in Deno and in a web page from one source: only its I/O boundary (engine/io.ts reads,
// engine/files.ts writes) and the command-line side (entry points; hub.ts, which finds `--model` hub ids in
// the local Hugging Face cache on disk, imported by cli.ts and the experiments, never by the web page) may
// use Deno's API or Node built-ins.
import * as assert from "node:assert/strict";

const ALLOWED = new Set(["io.ts", "files.ts", "cli.ts", "main.ts", "hub.ts"]);

Deno.test("engine/: Deno and node: only in io.ts, files.ts and the command line (cli.ts, main.ts, hub.ts)", async () => {
  const offenders: string[] = [];
  const engine = new URL("../engine/", import.meta.url);
  let checked = 0;
  for await (const e of Deno.readDir(engine)) {
    if (!e.name.endsWith(".ts") || ALLOWED.has(e.name)) continue;
    checked++;
    const lines = (await Deno.readTextFile(new URL(e.name, engine))).split("\n");
    lines.forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, "");
      if (/\bDeno\.|from "node:|import\("node:/.test(code)) {
        offenders.push(`engine/${e.name}:${i + 1}: ${line.trim()}`);
      }
    });
  }
  assert.ok(checked >= 10, `only ${checked} engine files found`);
  assert.deepEqual(offenders, [], "engine files outside the I/O boundary use Deno or node built-ins");
});
