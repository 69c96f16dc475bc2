// Resumable HTTP downloads shared by fetch-data (datasets) and fetch-model (Hugging Face repositories):
// the body goes onto the end of a partial file, an interrupted download is resumed with an HTTP Range
// request, and a progress callback sees the bytes on disk. Verifying and renaming the finished file is
// the caller's job (each knows its checksums and final layout).
import { createHash } from "node:crypto";
import { ProgressBar } from "../output.ts";
import { exists } from "../../engine/files.ts";

/** The server could not be reached or refused the file: another site may have it. */
export class DownloadError extends Error {
  override name = "DownloadError";
  /** The HTTP status when the server answered (401/403: credentials), null when it could not be reached. */
  constructor(message: string, readonly status: number | null = null) {
    super(message);
  }
}

export interface Progress {
  file: string;
  /** Bytes of the file on disk so far (a resumed download starts at the old part's size). */
  bytes: number;
  /** The full size, when the server says it. */
  total: number | null;
}

/** Hex digest of a file read in chunks, optionally of `prefix` + the file (git's blob hash). */
export async function fileDigest(
  path: string,
  algorithm: "sha256" | "sha1" = "sha256",
  prefix?: string,
): Promise<string> {
  const hash = createHash(algorithm);
  if (prefix !== undefined) hash.update(prefix);
  using file = await Deno.open(path, { read: true });
  const buffer = new Uint8Array(1 << 20);
  for (let n = await file.read(buffer); n !== null; n = await file.read(buffer)) {
    hash.update(buffer.subarray(0, n));
  }
  return hash.digest("hex");
}

/** Hex sha256 of a file. */
export function sha256File(path: string): Promise<string> {
  return fileDigest(path);
}

/**
 * Downloads `url` into `part`, continuing from the bytes already there with a Range request (a server
 * that ignores the range restarts it from scratch). Returns the offset it resumed from (0 = from
 * scratch). Throws DownloadError (with the status) when the server is unreachable or refuses.
 */
export async function resumeDownload(
  url: string,
  part: string,
  o: { file: string; headers?: Record<string, string>; onProgress?: (p: Progress) => void },
): Promise<number> {
  let offset = (await exists(part)) ? (await Deno.stat(part)).size : 0;
  const get = async (range: boolean) => {
    try {
      return await fetch(url, {
        headers: { ...o.headers, ...(range ? { Range: `bytes=${offset}-` } : {}) },
      });
    } catch (e) {
      // fetch's own message is just "fetch failed"; the cause names the DNS or connection error.
      const cause = (e as Error).cause;
      throw new DownloadError(`${url}: ${(e as Error).message}${cause ? ` (${cause})` : ""}`);
    }
  };
  let response = await get(offset > 0);
  if (offset > 0 && response.status === 416) {
    // Nothing left to send: the part already holds the whole file (the caller verifies it).
    await response.body?.cancel();
    return offset;
  }
  if (
    offset > 0 &&
    !(response.status === 206 && response.headers.get("content-range")?.startsWith(`bytes ${offset}-`))
  ) {
    // The server ignored the range (200) or answered another one: start over.
    await response.body?.cancel();
    offset = 0;
    response = await get(false);
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new DownloadError(`${url}: HTTP ${response.status} ${response.statusText}`, response.status);
  }
  await appendBody(response, part, offset, url, o.file, o.onProgress);
  return offset;
}

/** Streams the response body onto the end of `part` (which holds `offset` bytes). */
async function appendBody(
  response: Response,
  part: string,
  offset: number,
  url: string,
  file: string,
  onProgress?: (p: Progress) => void,
): Promise<void> {
  const length = response.headers.get("content-length");
  const total = length === null ? null : offset + Number(length);
  using out = await Deno.open(part, {
    write: true,
    create: true,
    append: offset > 0,
    truncate: offset === 0,
  });
  let bytes = offset;
  onProgress?.({ file, bytes, total });
  try {
    for await (const chunk of response.body!) {
      for (let written = 0; written < chunk.length;) written += await out.write(chunk.subarray(written));
      bytes += chunk.length;
      onProgress?.({ file, bytes, total });
    }
  } catch (e) {
    throw new Error(
      `${url}: download interrupted after ${bytes}${total === null ? "" : ` of ${total}`} bytes (${
        (e as Error).message
      }); run again to resume`,
    );
  } finally {
    await out.sync();
  }
  if (total !== null && bytes !== total) {
    throw new Error(`${url}: truncated: got ${bytes} of ${total} bytes; run again to resume`);
  }
}

export const megabytes = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** A progress bar over a file's bytes (its size from the server, else `knownSize`). */
export function progressPrinter(knownSize?: number): (p: Progress) => void {
  let bar: ProgressBar | null = null;
  let last = 0;
  return (p) => {
    const total = p.total ?? knownSize ?? null;
    if (total === null) {
      // No size anywhere: a plain line every 5 MB.
      if (p.bytes - last >= 5e6) {
        console.error(`${p.file}: ${megabytes(p.bytes)}`);
        last = p.bytes;
      }
      return;
    }
    bar ??= new ProgressBar(p.file, total, { format: megabytes });
    bar.update(p.bytes);
  };
}

/** A progress bar per file, for a stream of progress reports about several files in turn. */
export function perFileProgress(): (p: Progress) => void {
  let current = "";
  let bar: (p: Progress) => void = () => {};
  return (p) => {
    if (p.file !== current) [current, bar] = [p.file, progressPrinter()];
    bar(p);
  };
}
