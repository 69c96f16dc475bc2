// ./locus task fetch-data beyond the download itself (tests/datasets_test.ts): every dataset has its
// published checksum or says it has none, a progress bar goes to stderr, and offline it lists the URLs
// it tried and where to put a copy fetched by hand, which the next run then verifies and accepts.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  BASE_URL_ENV,
  byHandMessage,
  DEFAULT_BASE_URLS,
  REMOTE_DATASETS,
} from "../experiments/data/remote_datasets.ts";
import { WIKITEXT_103 } from "../experiments/data/corpus.ts";
import { fakeHub } from "./http_fixtures.ts";

const cli = fileURLToPath(new URL("../experiments/commands/fetch_data.ts", import.meta.url));
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

async function run(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", cli, ...args], env }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

Deno.test("fetch-data: known_1000 and CounterFact have pinned checksums and sizes; zsRE says it has none", async () => {
  for (const name of ["known_1000", "counterfact"]) {
    assert.match(REMOTE_DATASETS[name].sha256 ?? "", /^[0-9a-f]{64}$/, name);
    assert.ok((REMOTE_DATASETS[name].size ?? 0) > 0, name);
  }
  assert.equal(REMOTE_DATASETS.zsre.sha256, undefined);
  assert.match(
    byHandMessage("zsre", REMOTE_DATASETS.zsre, ["u: offline"], "d"),
    /no published checksum is pinned for it/,
  );
  assert.deepEqual(DEFAULT_BASE_URLS.map((u) => new URL(u).hostname), [
    "rome.baulab.info",
    "memit.baulab.info",
  ]);
  const help = await run(["--help"]);
  assert.match(help.stdout, /usage: \.\/locus task fetch-data NAME/);
});

Deno.test("fetch-data offline: what it tried and where to put the file; a copy put there by hand is accepted", async () => {
  const dataDir = await Deno.makeTempDir();
  try {
    // Port 9 (discard) refuses connections: the same error as a machine without a network.
    const offline = await run(["zsre", "--data-dir", dataDir], {
      [BASE_URL_ENV]: "http://127.0.0.1:9/dsets",
    });
    assert.equal(offline.code, 1);
    assert.match(
      offline.stderr,
      /could not download zsre_mend_eval\.json; tried:\n {2}http:\/\/127\.0\.0\.1:9\/dsets\/zsre_mend_eval\.json: /,
    );
    assert.ok(offline.stderr.includes(`put it at ${dataDir}/zsre_mend_eval.json`), offline.stderr);
    assert.match(offline.stderr, /\.\/locus task fetch-data zsre again/);
    await Deno.copyFile(fixture("zsre.json"), `${dataDir}/zsre_mend_eval.json`);
    const byHand = await run(["zsre", "--data-dir", dataDir], { [BASE_URL_ENV]: "http://127.0.0.1:9/dsets" });
    assert.equal(byHand.code, 0, byHand.stderr);
    assert.match(byHand.stdout, /zsre: .*zsre_mend_eval\.json \(already present\), \d+ bytes, \d+ records/);
    const sidecar = await Deno.readTextFile(`${dataDir}/zsre_mend_eval.json.sha256`);
    assert.match(sidecar, /^[0-9a-f]{64} {2}zsre_mend_eval\.json\n$/);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("fetch-data: a progress bar with the size in MB on stderr (plain lines when not a terminal)", async () => {
  const body = await Deno.readFile(fixture("zsre.json"));
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(body, { headers: { "content-length": String(body.length) } }),
  );
  const dataDir = await Deno.makeTempDir();
  try {
    const r = await run([
      "zsre",
      "--data-dir",
      dataDir,
      "--base-url",
      `http://127.0.0.1:${server.addr.port}/d`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /zsre_mend_eval\.json \[#{20}\] [\d.]+ MB\/[\d.]+ MB 100% {2}\d+s elapsed\n/);
    assert.match(
      r.stdout,
      /no published checksum is pinned for zsre_mend_eval\.json: this one is recorded in/,
    );
  } finally {
    await server.shutdown();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("fetch-data wikitext-103: into the hub cache from HF_ENDPOINT, trusting and recording the first download (said), refusing a changed file later", async () => {
  const body = Deno.readFileSync(fixture("wikitext/train-00000-of-00002.parquet"));
  const serve = (first: Uint8Array<ArrayBuffer>) =>
    fakeHub({
      "datasets/Salesforce/wikitext": {
        files: {
          "wikitext-103-raw-v1/train-00000-of-00002.parquet": first,
          "wikitext-103-raw-v1/train-00001-of-00002.parquet": body,
        },
      },
    });
  const cache = await Deno.makeTempDir();
  const env = (hub: { origin: string }) => ({ HF_ENDPOINT: hub.origin, HF_HUB_CACHE: cache, HF_TOKEN: "" });
  let hub = serve(body);
  try {
    const r = await run(["wikitext-103"], env(hub));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /wikitext-103: trust on first use: 2 file\(s\) have no pinned checksum/);
    assert.match(
      r.stdout,
      /wikitext-103: .*datasets--Salesforce--wikitext\/snapshots\/[0-9a-f]{40}; use it with --corpus/,
    );
    assert.ok(
      hub.requests.some((q) =>
        q.path === `/api/datasets/Salesforce/wikitext/revision/${WIKITEXT_103.revision}`
      ),
    );
  } finally {
    await hub.close();
  }
  hub = serve(body.slice(0, body.length - 1));
  try {
    const r = await run(["wikitext-103"], env(hub));
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `fetch-data: Salesforce/wikitext@main: wikitext-103-raw-v1/train-00000-of-00002\\.parquet is now ${
          body.length - 1
        } bytes with sha256 [0-9a-f]{64}, but the first download .* recorded ${body.length} bytes`,
      ),
    );
  } finally {
    await hub.close();
    await Deno.remove(cache, { recursive: true });
  }
});
