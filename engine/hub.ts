// Where a model named on the command line lives: `--model` takes a folder, or a Hugging Face hub id
// ("openai-community/gpt2", optionally "@revision") found in the local hub cache, the layout the Python
// huggingface_hub library and `./locus task fetch-model` both write, so a user's existing cache is reused:
//   <cache>/models--org--name/refs/<branch or tag>   the commit hash the name points at
//   <cache>/models--org--name/snapshots/<commit>/    the files (symlinks into blobs/)
//   <cache>/models--org--name/blobs/<sha256 or git oid>
// The cache folder is HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub, as in Python.
import { join } from "node:path";
import { getHFHubCachePath, getRepoFolderName } from "npm:@huggingface/hub@2.17.5";

export type RepoType = "model" | "dataset";

/** The hub cache folder the environment selects (read on every call, so tests can change it). */
export function hubCacheDir(): string {
  return getHFHubCachePath();
}

/** <cache>/models--org--name (or datasets--org--name). */
export function repoCacheDir(id: string, type: RepoType = "model", cacheDir = hubCacheDir()): string {
  return join(cacheDir, getRepoFolderName({ name: id, type }));
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;
const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/;

/** "org/name" or "org/name@revision"; null when the text cannot be a hub id. */
export function parseHubId(text: string): { id: string; revision: string } | null {
  const at = text.lastIndexOf("@");
  const id = at < 0 ? text : text.slice(0, at), revision = at < 0 ? "main" : text.slice(at + 1);
  if (!HUB_ID.test(id) || id.includes("..") || revision === "" || revision.includes("..")) return null;
  return { id, revision };
}

/** The snapshot folder of `revision` (a commit hash, or a branch/tag with a refs file), or null. */
export async function cachedSnapshot(
  id: string,
  revision = "main",
  type: RepoType = "model",
  cacheDir = hubCacheDir(),
): Promise<string | null> {
  const repo = repoCacheDir(id, type, cacheDir);
  let commit = revision;
  if (!COMMIT_HASH.test(revision)) {
    try {
      commit = (await Deno.readTextFile(join(repo, "refs", revision))).trim();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }
  const snapshot = join(repo, "snapshots", commit);
  try {
    return (await Deno.stat(snapshot)).isDirectory ? snapshot : null;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * The folder `--model ARG` names: ARG itself when it is a folder or cannot be a hub id (a path such as
 * /x/y or ./x, whose missing files the command reports), else the cached snapshot of the hub id ARG;
 * a hub id that is not cached is an error that says how to download it.
 */
export async function resolveModelDir(arg: string): Promise<string> {
  try {
    if ((await Deno.stat(arg)).isDirectory) return arg;
    throw new Error(`--model ${arg}: a file, not a model folder`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const hub = parseHubId(arg);
  if (hub === null) return arg;
  const snapshot = await cachedSnapshot(hub.id, hub.revision);
  if (snapshot !== null) return snapshot;
  const revision = hub.revision === "main" ? "" : ` --revision ${hub.revision}`;
  throw new Error(
    `--model ${arg}: no such folder, and revision ${hub.revision} of ${hub.id} is not in the Hugging Face ` +
      `cache (${repoCacheDir(hub.id)}; HF_HUB_CACHE or HF_HOME choose the cache); download it with ` +
      `./locus task fetch-model ${hub.id}${revision}`,
  );
}
