// The one way Locus writes a file: to a temp file in the same folder, fsynced, then renamed over the
// target (and the folder fsynced), so a process killed at any moment leaves either the old file or the
// new one, never a torn one. Writers of several files (checkpoints) write their manifest last.
// This is the writing half of the engine's I/O boundary (engine/io.ts reads): Deno only, as a web page
// downloads bytes rather than writing files.

/** Writes `bytes` to the open file in full (a write may take fewer bytes than offered). */
export async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
}

/** Flushes a folder's entries (the rename) to disk; a no-op where folders cannot be opened (Windows). */
async function syncFolder(path: string): Promise<void> {
  const slash = path.lastIndexOf("/");
  const folder = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  let dir: Deno.FsFile;
  try {
    dir = await Deno.open(folder, { read: true });
  } catch {
    return;
  }
  try {
    await dir.sync();
  } catch {
    /* some file systems refuse fsync on a folder: the rename itself is still atomic */
  } finally {
    dir.close();
  }
}

/** Atomically replaces `path` with what `write` writes into the (temp) file it is given. */
export async function writeFileAtomic(
  path: string,
  write: (file: Deno.FsFile) => Promise<void>,
): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}-${crypto.randomUUID()}`;
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(tmp, { write: true, createNew: true });
  } catch (e) {
    throw new Error(`cannot write ${path} (${(e as Error).message})`);
  }
  try {
    await write(file);
    await file.sync();
    file.close();
    file = undefined;
    await moveIntoPlace(tmp, path);
  } catch (e) {
    file?.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** The last step of an atomic write: renames the finished, fsynced file `from` (in the same folder) over
 *  `path` and flushes the folder. A resumable download (experiments/data/download.ts) streams into its own part file
 *  and ends with this once the file is verified. */
export async function moveIntoPlace(from: string, path: string): Promise<void> {
  await Deno.rename(from, path);
  await syncFolder(path);
}

/** Atomically replaces `path` with `data` (text is written as UTF-8). */
export function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return writeFileAtomic(path, (file) => writeAll(file, bytes));
}

/** Creates `dir` and its parents if missing. */
export async function makeFolder(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
}

/** Whether a file or folder exists at `path` (other errors, such as a denied permission, are thrown). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** `exists`, synchronously (for SQLite stores opened synchronously). */
export function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Removes the file at `path`; a missing file is not an error. */
export async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}
