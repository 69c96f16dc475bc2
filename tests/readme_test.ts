// The README's "Library guide" and mod.ts's module example run as written (`deno test --doc` executes
// every TypeScript code block of both), on the embedded model, so the documented API cannot rot.
// A block that throws or fails an assertion fails this test with the block's output.
import assert from "node:assert/strict";
import { denoTest } from "./run.ts";

Deno.test("README and mod.ts: every TypeScript example runs and its assertions hold", async () => {
  const root = new URL("..", import.meta.url).pathname;
  const readme = await Deno.readTextFile(`${root}README.md`);
  // The guide's blocks: a README without them would make this test pass vacuously.
  const blocks = readme.match(/^```ts$/gm)?.length ?? 0;
  assert.ok(blocks >= 3, `README.md has ${blocks} TypeScript blocks; the Library guide has three`);
  // Through the suite runner's denoTest: the doc blocks run in one process, each in an isolate with its
  // own WebGPU device, and such a process can abort at exit after passing (tests/run.ts says why).
  const out = await denoTest({
    name: "README.md and mod.ts examples",
    args: ["--doc", "-A", "README.md", "mod.ts"],
    cwd: root,
    env: { NO_COLOR: "1" },
  });
  assert.equal(out.code, 0, out.output);
  // One test per block of the README plus mod.ts's example, each of them run (not only type-checked).
  assert.equal(out.passed, blocks + 1, out.output);
});
