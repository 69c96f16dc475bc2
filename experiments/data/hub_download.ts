// Downloads a Hugging Face model repository into the standard hub cache (for ./locus task fetch-model
// and the hub corpora of the key statistics) (engine/hub.ts describes the layout), so `--model ID` then works wherever a folder
// does and a cache the Python libraries filled is reused as is.
//
// The hub API (repository info, file tree) goes through the maintained client `@huggingface/hub`.
// Its own downloader (downloadFileToCacheDir) is not used: it neither resumes an interrupted download
// nor verifies checksums nor reports progress, which multi-gigabyte checkpoints need. So each file is
// fetched here from /resolve/<commit>/<path> into blobs/<etag>.incomplete (the name Python uses, so
// either tool resumes the other's partial file) with HTTP Range resume and a progress bar, verified
// against the hash the tree lists (LFS files: sha256 of the content; small files: git's blob sha1),
// and only then renamed to blobs/<etag> and linked from snapshots/<commit>/<path>.
// By default only what Locus reads is fetched: top-level *.json, *.txt and *.safetensors.
// Gated or private repositories need a token: HF_TOKEN, else the file `huggingface-cli login` wrote.
import { datasetInfo, HubApiError, listFiles, modelInfo } from "npm:@huggingface/hub@2.17.5";
import { basename, dirname, join, relative } from "node:path";
import { exists, removeIfExists, writeAtomic } from "../../engine/files.ts";
import { cachedSnapshot, COMMIT_HASH, hubCacheDir, repoCacheDir, type RepoType } from "../../engine/hub.ts";
import { DownloadError, fileDigest, type Progress, resumeDownload } from "./download.ts";

export const DEFAULT_ENDPOINT = "https://huggingface.co";

/** HF_ENDPOINT (a mirror), as the Python hub reads it, else huggingface.co. */
export function hubEndpoint(): string {
  return (Deno.env.get("HF_ENDPOINT") ?? DEFAULT_ENDPOINT).replace(/\/+$/, "");
}

/** HF_TOKEN, else the token file of `huggingface-cli login` (HF_TOKEN_PATH, HF_HOME/token), else null. */
export async function hubToken(): Promise<string | null> {
  const env = Deno.env.get("HF_TOKEN");
  if (env) return env.trim();
  const home = Deno.env.get("HF_HOME") ?? join(Deno.env.get("HOME") ?? "", ".cache", "huggingface");
  try {
    return (await Deno.readTextFile(Deno.env.get("HF_TOKEN_PATH") ?? join(home, "token"))).trim() || null;
  } catch {
    return null;
  }
}

/** What to tell the user when the hub refuses a repository or file (401/403/404). */
export function refusalMessage(
  endpoint: string,
  id: string,
  status: number,
  hasToken: boolean,
  revision: string,
  type: RepoType = "model",
): string {
  const page = `${endpoint}/${type === "dataset" ? "datasets/" : ""}${id}`;
  if (status === 401 && !hasToken) {
    return `${id}: HTTP 401: the repository is gated or private (or does not exist). Accept its terms on ` +
      `${page} while logged in, create a read token at ${DEFAULT_ENDPOINT}/settings/tokens and set ` +
      `HF_TOKEN=hf_... (or run huggingface-cli login), then run this again`;
  }
  if (status === 401) return `${id}: HTTP 401: the hub refused the token in HF_TOKEN (expired or mistyped?)`;
  if (status === 403) {
    return `${id}: HTTP 403: the token has no access to this gated repository: accept its terms on ${page} ` +
      `(some need approval first) or use a token with read access`;
  }
  if (status === 404) return `${id}: HTTP 404: no such repository, or no revision "${revision}"`;
  return `${id}: HTTP ${status}`;
}

/**
 * Only what Locus reads: top-level configs, tokenizer files and safetensors weights (not Mistral's
 * consolidated.safetensors, the same weights again in its reference code's layout).
 */
export function locusFiles(path: string): boolean {
  return !path.includes("/") && /\.(json|txt|safetensors)$/.test(path) && !path.startsWith("consolidated");
}

export interface FetchRepoOptions {
  revision?: string;
  type?: RepoType;
  cacheDir?: string;
  /** The hub's URL (default hubEndpoint()) and access token (default hubToken()). */
  endpoint?: string;
  token?: string | null;
  /** Which repository files to fetch (default locusFiles). */
  include?: (path: string) => boolean;
  onProgress?: (p: Progress) => void;
  log?: (line: string) => void;
}

export interface FetchedFile {
  path: string;
  bytes: number;
  /** The blob's name: the file's sha256 (LFS files) or git blob sha1 (small files), as the hub lists it. */
  etag: string;
  /** How it got there: already in the snapshot, already a blob (linked), or downloaded. */
  how: "cached" | "linked" | "downloaded";
  /** For a download: bytes of a partial file it resumed from. */
  resumedFrom: number;
}

export interface FetchRepoResult {
  snapshot: string;
  commit: string;
  files: FetchedFile[];
}

interface TreeFile {
  path: string;
  size: number;
  /** The blob's name in the cache: the LFS sha256, or git's blob oid for small files. */
  etag: string;
  lfs: boolean;
}

/** Links snapshots/<commit>/<path> to its blob with a relative symlink, as Python does (atomically). */
async function linkBlob(blob: string, pointer: string): Promise<void> {
  await Deno.mkdir(dirname(pointer), { recursive: true });
  const tmp = `${pointer}.tmp-${Deno.pid}-${crypto.randomUUID()}`;
  await Deno.symlink(relative(dirname(pointer), blob), tmp);
  await Deno.rename(tmp, pointer);
}

/** Checks a finished download against the tree's hash; deletes it and throws on a mismatch. */
async function verifyBlob(file: TreeFile, incomplete: string, url: string): Promise<void> {
  const size = (await Deno.stat(incomplete)).size;
  const digest = file.lfs
    ? await fileDigest(incomplete, "sha256")
    : await fileDigest(incomplete, "sha1", `blob ${size}\0`);
  let problem: string | null = null;
  if (size !== file.size) problem = `got ${size} bytes, expected ${file.size}`;
  else if (digest !== file.etag) {
    problem = `checksum mismatch: ${file.lfs ? "sha256" : "git blob sha1"} ${digest}, expected ${file.etag}`;
  }
  if (problem !== null) {
    await removeIfExists(incomplete);
    throw new Error(`${url}: ${problem}; the downloaded file was deleted, run again to fetch it anew`);
  }
}

/**
 * Downloads repository `id` at `revision` (default main) into the hub cache and returns its snapshot
 * folder. Files already cached are not fetched again; interrupted ones resume.
 */
export async function fetchRepo(id: string, o: FetchRepoOptions = {}): Promise<FetchRepoResult> {
  const revision = o.revision ?? "main", type = o.type ?? "model";
  const cacheDir = o.cacheDir ?? hubCacheDir(), endpoint = o.endpoint ?? hubEndpoint();
  const token = o.token === undefined ? await hubToken() : o.token;
  const credentials = { hubUrl: endpoint, ...(token ? { accessToken: token } : {}) };
  const include = o.include ?? locusFiles;
  const refuse = (e: unknown): never => {
    if (e instanceof HubApiError) {
      throw new Error(refusalMessage(endpoint, id, e.statusCode, token !== null, revision, type));
    }
    throw e;
  };

  let commit: string;
  try {
    const info = type === "model"
      ? await modelInfo({ name: id, revision, additionalFields: ["sha"], ...credentials })
      : await datasetInfo({ name: id, revision, additionalFields: ["sha"], ...credentials });
    commit = info.sha;
  } catch (e) {
    if (e instanceof HubApiError) refuse(e);
    // Unreachable hub: a cached snapshot of that revision is as good as a fresh one.
    const cached = await cachedSnapshot(id, revision, type, cacheDir);
    if (cached !== null) {
      o.log?.(`${endpoint} unreachable (${(e as Error).message}); using the cached ${cached}`);
      return { snapshot: cached, commit: basename(cached), files: [] };
    }
    throw new DownloadError(
      `${endpoint}: cannot reach the hub (${(e as Error).message}) and ${id}@${revision} is not in ` +
        `${repoCacheDir(id, type, cacheDir)}. On a machine with access, fetch it there (this command, or ` +
        `Python's huggingface_hub.snapshot_download) and copy that folder over, or set HF_ENDPOINT to a mirror`,
    );
  }
  if (!COMMIT_HASH.test(commit ?? "") || (COMMIT_HASH.test(revision) && commit !== revision)) {
    throw new Error(`${endpoint}: ${id}: revision "${revision}" resolved to commit "${commit}"`);
  }

  const tree: TreeFile[] = [];
  const skipped: string[] = [];
  try {
    for await (
      const entry of listFiles({
        repo: { name: id, type },
        recursive: true,
        revision: commit,
        ...credentials,
      })
    ) {
      if (entry.type !== "file") continue;
      if (!include(entry.path)) {
        skipped.push(entry.path);
        continue;
      }
      if (entry.path.split("/").some((part) => part === ".." || part === "")) {
        throw new Error(`${endpoint}: ${id}: refusing the file path "${entry.path}"`);
      }
      const etag = entry.lfs?.oid ?? entry.oid;
      if (!etag) throw new Error(`${endpoint}: ${id}: the tree lists no hash for ${entry.path}`);
      tree.push({
        path: entry.path,
        size: entry.lfs?.size ?? entry.size,
        etag,
        lfs: entry.lfs !== undefined,
      });
    }
  } catch (e) {
    refuse(e);
  }
  if (type === "model" && o.include === undefined && !tree.some((f) => f.path.endsWith(".safetensors"))) {
    throw new Error(
      `${id}@${commit}: no .safetensors weights (files: ${skipped.join(", ") || "none"}); Locus reads ` +
        `safetensors only (convert the checkpoint with transformers: model.save_pretrained(dir))`,
    );
  }

  const storage = repoCacheDir(id, type, cacheDir);
  const snapshot = join(storage, "snapshots", commit);
  await Deno.mkdir(join(storage, "blobs"), { recursive: true });
  const prefix = type === "dataset" ? "datasets/" : "";
  const files: FetchedFile[] = [];
  for (const file of tree) {
    const pointer = join(snapshot, file.path), blob = join(storage, "blobs", file.etag);
    if (await exists(pointer)) {
      files.push({ path: file.path, bytes: file.size, etag: file.etag, how: "cached", resumedFrom: 0 });
      continue;
    }
    if (await exists(blob)) {
      await linkBlob(blob, pointer);
      files.push({ path: file.path, bytes: file.size, etag: file.etag, how: "linked", resumedFrom: 0 });
      continue;
    }
    const url = `${endpoint}/${prefix}${id}/resolve/${commit}/${
      file.path.split("/").map(encodeURIComponent).join("/")
    }`;
    const incomplete = `${blob}.incomplete`;
    let resumedFrom: number;
    try {
      resumedFrom = await resumeDownload(url, incomplete, {
        file: file.path,
        // identity: the size checked is the file's, not that of a compressed transfer.
        headers: { "Accept-Encoding": "identity", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        onProgress: o.onProgress,
      });
    } catch (e) {
      if (e instanceof DownloadError && e.status !== null && [401, 403, 404].includes(e.status)) {
        throw new Error(`${refusalMessage(endpoint, id, e.status, token !== null, revision, type)} (${url})`);
      }
      throw e;
    }
    await verifyBlob(file, incomplete, url);
    await Deno.rename(incomplete, blob);
    await linkBlob(blob, pointer);
    files.push({ path: file.path, bytes: file.size, etag: file.etag, how: "downloaded", resumedFrom });
  }
  // The name points at the snapshot only once it is complete (so --model NAME never finds half of one).
  if (revision !== commit) {
    await Deno.mkdir(dirname(join(storage, "refs", revision)), { recursive: true });
    await writeAtomic(join(storage, "refs", revision), commit);
  }
  return { snapshot, commit, files };
}
