// Local HTTP servers for the download tests (fetch-data, fetch-model, WikiText): files served with
// Range support, connections that drop part way through (so resuming is tested without a network),
// and a fake of the Hugging Face hub's API.
import { createHash } from "node:crypto";

export interface ServedFile {
  body: Uint8Array<ArrayBuffer>;
  /** The first `cuts` responses stop after `cutAfter` bytes of their body (the connection drops). */
  cutAfter?: number;
  cuts?: number;
}

/** The response to a GET of `served`, honouring a "bytes=N-" Range header (206, or 416 past the end). */
export function fileResponse(req: Request, served: ServedFile): Response {
  const range = req.headers.get("range");
  const length = served.body.length;
  const start = range ? Number(/^bytes=(\d+)-$/.exec(range)![1]) : 0;
  if (start >= length && range) {
    return new Response(null, { status: 416, headers: { "content-range": `bytes */${length}` } });
  }
  const headers: Record<string, string> = { "content-length": String(length - start) };
  if (range) headers["content-range"] = `bytes ${start}-${length - 1}/${length}`;
  const rest = served.body.subarray(start);
  let body: BodyInit = rest;
  if ((served.cuts ?? 0) > 0) {
    served.cuts!--;
    let sent = false;
    body = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (!sent) {
          sent = true;
          c.enqueue(rest.subarray(0, served.cutAfter));
          return;
        }
        await new Promise((r) => setTimeout(r, 20));
        c.close(); // short of content-length: the client sees the connection end early
      },
    });
  }
  return new Response(body, { status: range ? 206 : 200, headers });
}

/** Deno.serve on an ephemeral port of 127.0.0.1 with `handler`; records every request's path and range. */
export function serve(handler: (req: Request, path: string) => Response | Promise<Response>) {
  const requests: { path: string; range: string | null; authorization: string | null }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    requests.push({ path, range: req.headers.get("range"), authorization: req.headers.get("authorization") });
    return handler(req, path);
  });
  return { origin: `http://127.0.0.1:${server.addr.port}`, requests, close: () => server.shutdown() };
}

/** Serves `files` by path (404 otherwise); `url` is the origin + "/dsets". */
export function serveFiles(files: Record<string, ServedFile>) {
  const s = serve((req, path) => {
    const served = files[path];
    return served ? fileResponse(req, served) : new Response("not found", { status: 404 });
  });
  return { ...s, url: `${s.origin}/dsets` };
}

export const COMMIT = "0123456789abcdef0123456789abcdef01234567";
export const sha = (algorithm: string, bytes: Uint8Array, prefix = "") =>
  createHash(algorithm).update(prefix).update(bytes).digest("hex");

export interface FakeRepo {
  files: Record<string, Uint8Array<ArrayBuffer>>;
  /** Requests must carry this bearer token (else 401), like a gated repository. */
  token?: string;
  /** Served instead of the real bytes at /resolve/ (the tree still lists the real hash). */
  corrupt?: string;
  /** The first download of this file drops after 100 bytes. */
  drop?: string;
}

/**
 * The Hugging Face hub's API as fetch-model uses it: "/api/models/ID/revision/REV" (the commit),
 * "/api/models/ID/tree/COMMIT" (files with hashes) and "/ID/resolve/COMMIT/PATH"; dataset repositories
 * (keyed "datasets/ID") under "/api/datasets/ID/..." and "/datasets/ID/resolve/...". Every revision
 * of a branch is COMMIT.
 */
export function fakeHub(repos: Record<string, FakeRepo>) {
  const served = new Map<string, ServedFile>();
  return serve((req, path) => {
    const m =
      /^\/(?:api\/(models|datasets)\/|(datasets)\/)?([^/]+\/[^/]+)\/(revision|tree|resolve)\/([^/]+)\/?(.*)$/
        .exec(path);
    const key = m && (m[1] === "datasets" || m[2] === "datasets") ? `datasets/${m[3]}` : m?.[3];
    const repo = key ? repos[key] : undefined;
    if (!m || !repo) return Response.json({ error: "Repository not found" }, { status: 404 });
    if (repo.token && req.headers.get("authorization") !== `Bearer ${repo.token}`) {
      return Response.json({ error: "Access to this model is restricted" }, { status: 401 });
    }
    const [, , , id, kind, rev, file] = m;
    // A branch name resolves to COMMIT; a commit hash to itself.
    const commit = /^[0-9a-f]{40}$/.test(rev) ? rev : COMMIT;
    if (kind === "revision") return Response.json({ _id: "x", id, sha: commit, private: false });
    if (rev !== commit) return Response.json({ error: "Revision not found" }, { status: 404 });
    if (kind === "tree") {
      // LFS files list their sha256 (the cache's blob name), small files git's blob sha1.
      return Response.json(
        Object.entries(repo.files).map(([p, body]) => ({
          type: "file",
          path: p,
          size: body.length,
          oid: sha("sha1", body, `blob ${body.length}\0`),
          ...(/\.(safetensors|bin|parquet)$/.test(p)
            ? { lfs: { oid: sha("sha256", body), size: body.length, pointerSize: 134 } }
            : {}),
        })),
      );
    }
    const body = repo.files[file];
    if (!body) return new Response("not found", { status: 404 });
    const url = `${key}/${file}`;
    if (!served.has(url)) {
      const bytes = file === repo.corrupt ? body.map((b, i) => (i === 5 ? b ^ 1 : b)) : body;
      served.set(url, { body: bytes, cutAfter: 100, cuts: file === repo.drop ? 1 : 0 });
    }
    return fileResponse(req, served.get(url)!);
  });
}
