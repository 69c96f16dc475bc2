// Local HTTP servers for the download tests (fetch-data, fetch-model, WikiText): files served with
// Range support, and connections that drop part way through, so resuming is tested without a network.

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
