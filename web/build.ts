// Builds the web page and serves it on localhost: `./locus task web [--port N] [--build-only]`.
//
// The bundle is web/app.ts and the engine it imports, made by esbuild (npm) into web/dist/ (ignored by
// git). Two things esbuild cannot resolve on its own are handled here rather than copied:
//   - the shaders: shaders/*.wgsl read at build time into the constant LOCUS_SHADERS (name -> text),
//     which the page hands to engine/io.ts's browserIo, so the WGSL in the page is exactly the engine's;
//   - `npm:NAME@RANGE` imports (the engine's Hugging Face tokenizer library): resolved through deno.lock
//     to the exact version in Deno's npm cache, the copy Deno itself runs.
// The server answers the page's files from web/dist/ and the embedded model's folder from weights/.
import * as esbuild from "npm:esbuild@0.25";
import { parseArgs } from "node:util";
import { runMain } from "../engine/main.ts";

export const ROOT = new URL("..", import.meta.url).pathname;
export const DIST = `${ROOT}web/dist`;

/** Deno's npm cache folder (`deno info --json`). */
async function npmCache(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdout: "piped" }).output();
  if (!out.success) throw new Error("web build: `deno info --json` failed");
  return JSON.parse(new TextDecoder().decode(out.stdout)).npmCache;
}

/** shaders/*.wgsl by file name: the page's copy of the engine's kernels, made at every build. */
async function shaderSources(): Promise<Record<string, string>> {
  const shaders: Record<string, string> = {};
  for await (const e of Deno.readDir(`${ROOT}shaders`)) {
    if (e.name.endsWith(".wgsl")) shaders[e.name] = await Deno.readTextFile(`${ROOT}shaders/${e.name}`);
  }
  return shaders;
}

function npmPlugin(cache: string, locked: Record<string, string>): esbuild.Plugin {
  return {
    name: "deno-npm",
    setup(build) {
      build.onResolve({ filter: /^npm:/ }, async (args) => {
        const spec = args.path.match(/^npm:((?:@[^/]+\/)?[^@/]+)@([^/]+)(\/.*)?$/);
        const version = spec && locked[`npm:${spec[1]}@${spec[2]}`];
        if (!spec || !version) {
          return { errors: [{ text: `${args.path}: not in deno.lock (run the engine once with Deno)` }] };
        }
        const dir = `${cache}/registry.npmjs.org/${spec[1]}/${version}`;
        const r = await build.resolve(`./${(spec[3] ?? "").replace(/^\//, "")}`, {
          kind: args.kind,
          resolveDir: dir,
        });
        return r.errors.length ? { errors: r.errors } : { path: r.path };
      });
    },
  };
}

/** Bundles web/app.ts (with the engine) and copies web/index.html into web/dist/. */
export async function buildWeb(): Promise<void> {
  // Deno fetches the npm packages the engine imports into its cache (a no-op once they are there).
  const cached = await new Deno.Command(Deno.execPath(), { args: ["cache", `${ROOT}web/app.ts`] }).output();
  if (!cached.success) throw new Error(`web build: deno cache web/app.ts failed`);
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}deno.lock`));
  try {
    await esbuild.build({
      entryPoints: [`${ROOT}web/app.ts`],
      bundle: true,
      format: "esm",
      platform: "browser",
      target: "es2022",
      outfile: `${DIST}/app.js`,
      sourcemap: true,
      logLevel: "warning",
      define: { LOCUS_SHADERS: JSON.stringify(await shaderSources()) },
      plugins: [npmPlugin(await npmCache(), lock.specifiers ?? {})],
    });
  } finally {
    await esbuild.stop();
  }
  await Deno.copyFile(`${ROOT}web/index.html`, `${DIST}/index.html`);
}

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  map: "application/json",
  json: "application/json",
  txt: "text/plain; charset=utf-8",
};

/** Serves web/dist/ at / and the files of weights/ at /weights/ on localhost; port 0 picks a free one. */
export function serveWeb(port: number, onListen?: (port: number) => void): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({
    hostname: "127.0.0.1",
    port,
    onListen: ({ port }) => onListen?.(port),
  }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path.split("/").includes("..")) return new Response("bad path", { status: 400 });
    const file = path.startsWith("/weights/")
      ? `${ROOT}${path.slice(1)}`
      : `${DIST}${path === "/" ? "/index.html" : path}`;
    try {
      const data = await Deno.readFile(file);
      const ext = file.slice(file.lastIndexOf(".") + 1);
      return new Response(data, { headers: { "content-type": TYPES[ext] ?? "application/octet-stream" } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { port: { type: "string", default: "8000" }, "build-only": { type: "boolean" } },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--port ${values.port}: not a port`);
  }
  const started = performance.now();
  await buildWeb();
  console.log(`built web/dist/ in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  if (values["build-only"]) return 0;
  const server = serveWeb(port, (p) => {
    console.log(`Locus in the browser: http://localhost:${p}/  (Ctrl-C stops)`);
    console.log("It needs WebGPU: Chrome/Edge 113+; on Linux start Chrome with --enable-unsafe-webgpu.");
  });
  await server.finished;
  return 0;
}

if (import.meta.main) runMain("web", main);
