// The `./locus` launcher's environment: jemalloc preloaded without a GPU where it is installed (why: the
// comment above preload_jemalloc in ./locus), never twice, and never with LOCUS_MALLOC=system.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { folderNames, hasGpuDeviceNode } from "../engine/io.ts";

const launcher = new URL("../locus", import.meta.url).pathname;

/** LD_PRELOAD as Deno started by `./locus` sees it, given these variables on top of a clean environment. */
async function preloadSeen(env: Record<string, string>): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: [launcher, "eval", 'console.log(Deno.env.get("LD_PRELOAD") ?? "")'],
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: Deno.env.get("HOME") ?? "/tmp",
      LOCUS_SKIP_CHECK: "1",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test({
  name:
    "./locus preloads jemalloc on a Linux machine without a GPU when it is installed, once, unless LOCUS_MALLOC=system",
  ignore: Deno.build.os !== "linux",
}, async () => {
  const libraries = ["/usr/lib", "/usr/lib64"].flatMap((root) =>
    [root, ...folderNames(root).map((d) => `${root}/${d}`)].filter((dir) =>
      folderNames(dir).includes("libjemalloc.so.2")
    )
  ).map((dir) => `${dir}/libjemalloc.so.2`);
  const expected = hasGpuDeviceNode() ? [] : libraries;

  const plain = await preloadSeen({});
  if (expected.length) assert.ok(expected.includes(plain), `jemalloc preloaded: ${plain}`);
  else assert.equal(plain, "", "nothing preloaded with a GPU or without jemalloc");

  assert.equal(await preloadSeen({ LOCUS_MALLOC: "system" }), "");
  // A library the user preloads stays, after jemalloc; jemalloc already there is not added again.
  const other = "/nonexistent/libother.so";
  assert.equal(await preloadSeen({ LD_PRELOAD: other }), expected.length ? `${plain}:${other}` : other);
  if (expected.length) assert.equal(await preloadSeen({ LD_PRELOAD: plain }), plain);
});

// `./locus setup` builds Mesa with Locus's changes to llvmpipe (toolchain/llvmpipe.patch) and records in
// toolchain/mesa/locus-patch the sha256 of the patch's diff (from its first "--- " line) and whether it
// applied: the build this suite runs on must carry the current version of the changes (setup rebuilds one
// that does not).
const builtMesa = new URL("../toolchain/mesa/", import.meta.url).pathname;
Deno.test({
  name: "toolchain/mesa/, where ./locus setup built it, carries the current llvmpipe changes",
  ignore: !folderNames(builtMesa).includes("lib"),
}, () => {
  const patch = Deno.readTextFileSync(new URL("../toolchain/llvmpipe.patch", import.meta.url));
  const digest = createHash("sha256").update(patch.slice(patch.search(/^--- /m))).digest("hex");
  const [id, status] = Deno.readTextFileSync(`${builtMesa}locus-patch`).split("\n");
  assert.equal(id, digest, "toolchain/mesa/ was built with another version of the patch: run ./locus setup");
  assert.equal(status, "applied", `the patch did not apply to the Mesa built (${status})`);
});
