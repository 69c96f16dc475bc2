// The `./locus` launcher's environment: jemalloc preloaded without a GPU where it is installed (why: the
// comment above preload_jemalloc in ./locus), never twice, and never with LOCUS_MALLOC=system.
import assert from "node:assert/strict";

const launcher = new URL("../locus", import.meta.url).pathname;

function entries(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch {
    return [];
  }
}

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
  const noGpu = !entries("/dev/dri").some((n) => n.startsWith("renderD")) &&
    !entries("/dev").some((n) => /^nvidia[0-9]/.test(n) || n === "dxg" || n === "kfd");
  const libraries = ["/usr/lib", "/usr/lib64"].flatMap((root) =>
    [root, ...entries(root).map((d) => `${root}/${d}`)].filter((dir) =>
      entries(dir).includes("libjemalloc.so.2")
    )
  ).map((dir) => `${dir}/libjemalloc.so.2`);
  const expected = noGpu && libraries.length ? libraries : [];

  const plain = await preloadSeen({});
  if (expected.length) assert.ok(expected.includes(plain), `jemalloc preloaded: ${plain}`);
  else assert.equal(plain, "", "nothing preloaded with a GPU or without jemalloc");

  assert.equal(await preloadSeen({ LOCUS_MALLOC: "system" }), "");
  // A library the user preloads stays, after jemalloc; jemalloc already there is not added again.
  const other = "/nonexistent/libother.so";
  assert.equal(await preloadSeen({ LD_PRELOAD: other }), expected.length ? `${plain}:${other}` : other);
  if (expected.length) assert.equal(await preloadSeen({ LD_PRELOAD: plain }), plain);
});
