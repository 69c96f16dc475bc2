// engine/files.ts: atomic replacement. A writer killed with SIGKILL at random moments leaves the old or
// the new content, never a torn file; a failed write leaves no file and no temp file; a missing folder
// is an error naming the target.
import assert from "node:assert/strict";
import { moveIntoPlace, writeAtomic, writeFileAtomic } from "../engine/files.ts";
import { rng } from "./util.ts";

const dir = await Deno.makeTempDir({ prefix: "locus-files-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

Deno.test("writeAtomic replaces a file whole; a failed write leaves neither file nor temp file", async () => {
  const path = `${dir}/a.txt`;
  await writeAtomic(path, "first");
  await writeAtomic(path, new TextEncoder().encode("second"));
  assert.equal(await Deno.readTextFile(path), "second");
  await assert.rejects(
    () =>
      writeFileAtomic(`${dir}/b.txt`, async (file) => {
        await file.write(new Uint8Array(10));
        throw new Error("disk full");
      }),
    /disk full/,
  );
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.txt"]);
  await assert.rejects(
    () => writeAtomic(`${dir}/no/such/folder.txt`, "x"),
    /cannot write .*no\/such\/folder\.txt/,
  );
});

Deno.test("moveIntoPlace puts a finished part file over the target and leaves no part behind", async () => {
  const path = `${dir}/data.json`, part = `${dir}/data.json.part`;
  await writeAtomic(path, "old");
  await Deno.writeTextFile(part, "new");
  await moveIntoPlace(part, path);
  assert.equal(await Deno.readTextFile(path), "new");
  await assert.rejects(Deno.stat(part), Deno.errors.NotFound);
  await Deno.remove(path);
});

Deno.test("a writer killed with SIGKILL at random moments never leaves a torn file", async () => {
  const path = `${dir}/big.bin`;
  // The child rewrites 4 MB of one repeated byte, alternating between 'a' and 'b', forever.
  const script = `
    import { writeAtomic } from ${JSON.stringify(new URL("../engine/files.ts", import.meta.url).href)};
    for (let i = 0; ; i++) {
      await writeAtomic(${JSON.stringify(path)}, new Uint8Array(4 << 20).fill(i % 2 ? 0x62 : 0x61));
      if (i === 0) console.log("written");
    }`;
  const random = rng(11);
  for (let kill = 0; kill < 4; kill++) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      stdout: "piped",
      stderr: "null",
    })
      .spawn();
    const reader = child.stdout.getReader();
    await reader.read(); // the first complete file exists
    await new Promise((r) => setTimeout(r, random() * 200));
    child.kill("SIGKILL");
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel();
    const bytes = await Deno.readFile(path);
    assert.equal(bytes.length, 4 << 20, "a torn file");
    assert.ok(
      bytes.every((b) => b === bytes[0]) && (bytes[0] === 0x61 || bytes[0] === 0x62),
      "mixed content",
    );
  }
});
