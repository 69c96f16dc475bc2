// Key statistics for real models (experiments/data/corpus.ts, experiments/editing/stats.ts): WikiText-103's
// parquet shards downloaded from a fake hub and read row group by row group (against what pyarrow
// reads, tests/fixtures/wikitext), statistics streamed from that corpus, interrupted and resumed to the
// same bits, cached per corpus; ROME/MEMIT's released .npz statistics (made by numpy in their format,
// tests/fixtures/rome_stats) imported as mom2 / count, with clear errors; and `edit --stats FILE.npz`.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { zipSync } from "npm:fflate@0.8.2";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { type HubCorpusSpec, openCorpus, WIKITEXT_103 } from "../experiments/data/corpus.ts";
import { fetchHubCorpus, hubCorpus } from "../experiments/data/hub_corpus.ts";
import {
  computeKeyStats,
  importRomeStats,
  importStatsFiles,
  KeyStats,
  keyStats,
  packCorpus,
  statsFileLayer,
} from "../experiments/editing/stats.ts";
import { COMMIT, fakeHub, sha } from "./http_fixtures.ts";
import { assertClose, runScript } from "./util.ts";

const fixture = (path: string) => fileURLToPath(new URL(`./fixtures/${path}`, import.meta.url));
const SHARDS = ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"];
const expectedRows: Record<string, string[]> = JSON.parse(
  Deno.readTextFileSync(fixture("wikitext/expected.json")),
);
const ROWS = SHARDS.flatMap((s) => expectedRows[s]);

/** WIKITEXT_103 with the fixture shards' sizes and hashes, at the fake hub's commit. */
const spec: HubCorpusSpec = {
  ...WIKITEXT_103,
  revision: COMMIT,
  files: SHARDS.map((s) => {
    const body = Deno.readFileSync(fixture(`wikitext/${s}`));
    return { path: `wikitext-103-raw-v1/${s}`, size: body.length, sha256: sha("sha256", body) };
  }),
};
const hubFiles = () =>
  Object.fromEntries(
    SHARDS.map((s) => [`wikitext-103-raw-v1/${s}`, Deno.readFileSync(fixture(`wikitext/${s}`))]),
  );

const gpu = await getGpu();
const words = [
  ...new Set(["<unk>", "<|endoftext|>", ...ROWS.flatMap((r) => r.split(/\s+/)).filter((w) => w)]),
];
const tok = new WordLevelTokenizer(words, { unk: "<unk>", eos: "<|endoftext|>" });
const cfg = {
  vocabSize: words.length,
  nPositions: 16,
  nEmbd: 16,
  nLayer: 2,
  nHead: 2,
  layerNormEpsilon: 1e-5,
};

Deno.test("WikiText-103: pinned checksums are enforced; the shards come from the hub cache, read as pyarrow reads them", async () => {
  // Nothing of WikiText-103 is pinned (see corpus.ts): its first download is trusted and recorded.
  assert.equal(WIKITEXT_103.revision, "main");
  assert.deepEqual(WIKITEXT_103.files.map((f) => f.path), SHARDS.map((s) => `wikitext-103-raw-v1/${s}`));
  assert.ok(WIKITEXT_103.files.every((f) => f.sha256 === undefined && f.size === undefined));

  const hub = fakeHub({ "datasets/Salesforce/wikitext": { files: hubFiles(), drop: spec.files[1].path } });
  const cacheDir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () => openCorpus("wikitext-103", cacheDir),
      /corpus wikitext-103: not downloaded .*run \.\/locus task fetch-data wikitext-103/,
    );
    const o = { cacheDir, endpoint: hub.origin, token: null };
    await assert.rejects(() => fetchHubCorpus(spec, o), /download interrupted after 100 of/);
    const r = await fetchHubCorpus(spec, o);
    assert.equal(r.trust, "every file matches its pinned sha256");
    assert.equal(r.snapshot, join(cacheDir, "datasets--Salesforce--wikitext", "snapshots", COMMIT));
    assert.deepEqual(r.files.map((f) => [f.how, f.resumedFrom]), [["cached", 0], ["downloaded", 100]]);

    const corpus = await hubCorpus(spec, cacheDir);
    const texts: string[] = [];
    for await (const t of corpus.texts()) texts.push(t);
    assert.deepEqual(texts, ROWS, "every row of both shards, in order, across row groups");
    assert.equal(corpus.name, "wikitext-103");

    // The pinned checksum must match what the hub lists, not only what it serves.
    const wrong = { ...spec, files: [{ ...spec.files[0], sha256: "0".repeat(64) }, spec.files[1]] };
    await assert.rejects(
      () => fetchHubCorpus(wrong, o),
      /train-00000-of-00002\.parquet is \d+ bytes with sha256 [0-9a-f]{64}; expected the pinned \d+ bytes, sha256 0{64}/,
    );
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("WikiText-103 without pinned checksums: the first download records the hub's sha256 (trust on first use, said), later ones must match", async () => {
  const files = hubFiles();
  const hub = fakeHub({ "datasets/Salesforce/wikitext": { files } });
  const cacheDir = await Deno.makeTempDir();
  try {
    const lines: string[] = [];
    const o = { cacheDir, endpoint: hub.origin, token: null, log: (l: string) => lines.push(l) };
    const first = await fetchHubCorpus(WIKITEXT_103, o);
    assert.match(
      first.trust,
      /^trust on first use: 2 file\(s\) have no pinned checksum; the sha256 the hub lists/,
    );
    assert.ok(lines.includes(`wikitext-103: ${first.trust}`), "said in the output");
    const record = join(cacheDir, "datasets--Salesforce--wikitext", "locus-corpus-wikitext-103.json");
    const recorded = JSON.parse(Deno.readTextFileSync(record));
    assert.deepEqual(recorded.files, spec.files, "the record holds the files' real sizes and sha256");
    assert.equal(recorded.commit, COMMIT);
    // Read at the recorded commit, keyed by the recorded checksums like a pinned spec.
    const corpus = await hubCorpus(WIKITEXT_103, cacheDir);
    assert.equal(corpus.hash, (await hubCorpus(spec, cacheDir)).hash);
    const again = await fetchHubCorpus(WIKITEXT_103, o);
    assert.match(again.trust, /^the files match the checksums recorded at the first download/);
  } finally {
    await hub.close();
  }
  // The hub now serves another file under the same name: refused, naming the record.
  const [a, b] = SHARDS.map((s) => `wikitext-103-raw-v1/${s}`);
  const changed = fakeHub({ "datasets/Salesforce/wikitext": { files: { [a]: files[b], [b]: files[b] } } });
  try {
    await assert.rejects(
      () => fetchHubCorpus(WIKITEXT_103, { cacheDir, endpoint: changed.origin, token: null }),
      /train-00000-of-00002\.parquet is now \d+ bytes with sha256 [0-9a-f]{64}, but the first download .* recorded \d+ bytes, sha256 [0-9a-f]{64} in .*locus-corpus-wikitext-103\.json; the hub's file changed/,
    );
  } finally {
    await changed.close();
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("key statistics from WikiText: streamed = packed in memory; an interrupted run resumes to the same bits; cached per corpus", async () => {
  const hub = fakeHub({ "datasets/Salesforce/wikitext": { files: hubFiles() } });
  const dir = await Deno.makeTempDir();
  try {
    await fetchHubCorpus(spec, { cacheDir: join(dir, "hub"), endpoint: hub.origin, token: null });
    const corpus = await hubCorpus(spec, join(dir, "hub"));
    const model = Model.random(gpu, cfg, 11, true);
    const samples = 80, seqLen = 8, batchTokens = 16; // 2 sequences a batch, several batches
    const opts = { corpus, layers: [0, 1], samples, seqLen, batchTokens, checkpointSeconds: 0 };

    // Oracle: the same texts packed up front (the path the existing tests check against float64 keys).
    const { stats: reference } = await computeKeyStats(model, packCorpus(tok, ROWS, seqLen, samples), {
      layers: [0, 1],
      samples,
      batchTokens,
    });
    const straight = await keyStats(model, tok, { ...opts, cacheDir: join(dir, "a") });
    for (const l of [0, 1]) {
      assert.equal(straight.get(l)!.count, samples);
      assert.deepEqual(straight.get(l)!.moment, reference.get(l)!.moment, `layer ${l}`);
    }

    // Interrupted after the third batch (a checkpoint after each), then resumed.
    let batches = 0;
    await assert.rejects(
      () =>
        keyStats(model, tok, {
          ...opts,
          cacheDir: join(dir, "b"),
          onProgress: () => {
            if (++batches === 3) throw new Error("interrupted");
          },
        }),
      /interrupted/,
    );
    const statsDir = join(dir, "b", model.source.split("/").at(-1)!, `wikitext-103-${corpus.hash}`);
    const partial = [...Deno.readDirSync(statsDir)].map((e) => e.name);
    assert.equal(partial.length, 1);
    assert.match(partial[0], /^partial-[0-9a-f]{12}\.safetensors$/);
    await assert.rejects(
      () => keyStats(model, tok, { ...opts, seqLen: 4, cacheDir: join(dir, "b") }),
      /a checkpoint of layers 0,1 for 80 keys in sequences of 8, not of layers 0,1 for 80 keys in sequences of 4; delete it/,
      "sequences are skipped by count: another packing cannot resume",
    );
    const lines: string[] = [];
    const resumed = await keyStats(model, tok, {
      ...opts,
      cacheDir: join(dir, "b"),
      log: (l) => lines.push(l),
    });
    assert.match(lines.join("\n"), /resuming from .*partial-[0-9a-f]{12}\.safetensors at 48 keys/);
    for (const l of [0, 1]) {
      assert.equal(resumed.get(l)!.count, samples);
      assert.deepEqual(
        resumed.get(l)!.moment,
        straight.get(l)!.moment,
        `layer ${l}: resumed = uninterrupted`,
      );
    }
    assert.deepEqual(
      [...Deno.readDirSync(statsDir)].map((e) => e.name).filter((n) => n.startsWith("partial")),
      [],
      "the checkpoint is removed once the statistics are cached",
    );
    lines.length = 0;
    await keyStats(model, tok, { ...opts, cacheDir: join(dir, "b"), log: (l) => lines.push(l) });
    assert.match(lines.join("\n"), /layer 1: cached \(80 keys\) .*wikitext-103-[0-9a-f]{12}\/layer1-n80-/);
  } finally {
    await hub.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ROME/MEMIT .npz statistics: mom2 / count against numpy, float32 and float64 (compressed), layer from the name", async () => {
  const expected: Record<string, { layer: number; count: number; moment: number[] }> = JSON.parse(
    Deno.readTextFileSync(fixture("rome_stats/expected.json")),
  );
  for (const [name, e] of Object.entries(expected)) {
    const s = await importRomeStats(fixture(`rome_stats/${name}`), 64);
    assert.equal(s.layer, e.layer);
    assert.equal(s.count, e.count);
    const scale = Math.max(...e.moment.map(Math.abs));
    assertClose(s.moment, e.moment, 1e-6 * scale, name);
  }
  assert.equal(
    statsFileLayer("stats/gpt2-xl/wikipedia_stats/transformer.h.17.mlp.c_proj_float32_mom2_100000.npz"),
    17,
  );
  assert.equal(statsFileLayer("model.layers.5.mlp.down_proj_float32_mom2_100000.npz"), 5);
  assert.equal(statsFileLayer("mom2.npz"), null);
});

Deno.test("ROME/MEMIT .npz statistics: wrong width, layer, arrays, dtype and file are refused by name", async () => {
  const f32 = fixture("rome_stats/transformer.h.1.mlp.c_proj_float32_mom2_200.npz");
  await assert.rejects(
    () => importRomeStats(f32, 128),
    /c_proj_float32_mom2_200\.npz: array "mom2\.mom2" has shape \[64,64\]; expected \[128,128\] for this model's key width \(the input of layer 1's MLP output projection\)/,
  );
  await assert.rejects(
    () => importRomeStats(f32, 64, 0),
    /the file name says layer 1, but layer 0 was asked for/,
  );
  const dir = await Deno.makeTempDir();
  try {
    const npy = (descr: string, shape: string, data: Uint8Array) => {
      const header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape}), }`.padEnd(117) +
        "\n";
      const head = new Uint8Array([0x93, ...new TextEncoder().encode("NUMPY"), 1, 0, header.length, 0]);
      return new Uint8Array([...head, ...new TextEncoder().encode(header), ...data]);
    };
    const count = npy("<i8", "", new Uint8Array(new BigInt64Array([4n]).buffer));
    const write = (name: string, files: Record<string, Uint8Array>) => {
      Deno.writeFileSync(join(dir, name), zipSync(files));
      return join(dir, name);
    };
    const mean = write("transformer.h.0.mlp.c_proj_float32_mean_4.npz", {
      "mean.mean.npy": count,
      "mean.count.npy": count,
    });
    await assert.rejects(
      () => importRomeStats(mean, 2),
      /mean_4\.npz: no array "mom2\.mom2" \(arrays: mean\.mean, mean\.count\); expected ROME\/MEMIT key statistics/,
    );
    const f16 = write("transformer.h.0.mlp.c_proj_float16_mom2_4.npz", {
      "mom2.mom2.npy": npy("<f2", "2, 2", new Uint8Array(8)),
      "mom2.count.npy": count,
    });
    await assert.rejects(
      () => importRomeStats(f16, 2),
      /array "mom2\.mom2" has dtype <f2; expected float32 or float64/,
    );
    const noLayer = write("mom2.npz", {
      "mom2.mom2.npy": npy("<f4", "2, 2", new Uint8Array(new Float32Array([4, 0, 0, 8]).buffer)),
      "mom2.count.npy": count,
    });
    await assert.rejects(
      () => importRomeStats(noLayer, 2),
      /mom2\.npz: no layer in the file name .*give it as L=FILE/,
    );
    const s = (await importStatsFiles([`1=${noLayer}`], 2, [1])).get(1)!;
    assert.deepEqual([...s.moment], [1, 0, 0, 2], "mom2 / count");
    await assert.rejects(
      () => importStatsFiles([`1=${noLayer}`], 2, [1, 2]),
      /--stats: no file for layer\(s\) 2/,
    );
    await assert.rejects(
      () => importStatsFiles([`0=${noLayer}`], 2, [1]),
      /statistics of layer 0, but the edit uses layers 1/,
    );
    Deno.writeTextFileSync(join(dir, "transformer.h.0.mlp.c_proj.npz"), "not a zip");
    await assert.rejects(
      () => importRomeStats(join(dir, "transformer.h.0.mlp.c_proj.npz"), 2),
      /c_proj\.npz: not an \.npz \(zip\) file/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("edit --stats FILE.npz: ROME runs on imported statistics, no corpus pass", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Model.random(gpu, cfg, 5, true).save(dir);
    await Deno.writeTextFile(`${dir}/tokenizer.json`, tok.toTokenizerJson());
    await Deno.writeTextFile(`${dir}/corpus.txt`, ROWS.join("\n")); // the word-level model's template words
    const npz = fixture("rome_stats/transformer.h.1.mlp.c_proj_float32_mom2_200.npz");
    const args = [
      "--model",
      dir,
      "--method",
      "rome",
      "--layer",
      "1",
      "--prompt",
      "Carl Berg lives in",
      "--subject",
      "Carl Berg",
    ];
    const r = await runScript(
      "experiments/commands/edit.ts",
      ...args,
      "--target-new",
      "Oslo",
      "--stats",
      npz,
      "--stats-dir",
      `${dir}/stats`,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /key statistics of layers 1: imported \(200 keys\)/);
    assert.doesNotMatch(r.stdout, /streaming/);
    assert.match(r.stdout, /p\(Oslo\) after the prompt: [\d.]+ -> [\d.]+/);
    const wrongLayer = await runScript(
      "experiments/commands/edit.ts",
      ...args.map((a) => (a === "1" ? "0" : a)),
      "--target-new",
      "Oslo",
      "--stats",
      npz,
    );
    assert.equal(wrongLayer.code, 1);
    assert.match(wrongLayer.stderr, /edit: --stats .*statistics of layer 1, but the edit uses layers 0/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the Cholesky factor is kept on disk by the moment's hash: read back equal, rewritten for another moment, a damaged file named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const f = 37; // odd: the packed triangle's rows have every length
    const G = Float32Array.from({ length: f * f }, (_, i) => Math.sin(i * 1.7) * 0.5);
    const moment = new Float32Array(f * f);
    for (let i = 0; i < f; i++) {
      for (let j = 0; j < f; j++) {
        let s = i === j ? 0.1 : 0;
        for (let k = 0; k < f; k++) s += G[i * f + k] * G[j * f + k] / f;
        moment[i * f + j] = s;
      }
    }
    const b = Float64Array.from({ length: f }, (_, i) => Math.cos(i));
    const lines: string[] = [];
    const first = new KeyStats(3, f, 10, moment, dir);
    await first.prepareSolve((l) => lines.push(l));
    const files = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.equal(files.length, 1, `one factor file: ${files}`);
    assert.match(lines[0], /Cholesky factor of the key second moment of layer 3: [\d.]+ s, kept in/);
    const again = new KeyStats(3, f, 10, moment.slice(), dir);
    await again.prepareSolve((l) => lines.push(l));
    assert.match(lines[1], /: cached /);
    assert.deepEqual(
      again.solve(b),
      new KeyStats(3, f, 10, moment).solve(b),
      "the cached factor solves bit-exactly",
    );
    const other = moment.slice();
    other[0] += 1;
    await new KeyStats(3, f, 10, other, dir).prepareSolve();
    assert.equal([...Deno.readDirSync(dir)].length, 2, "another moment, another file");
    const path = join(dir, files[0]);
    Deno.writeFileSync(path, Deno.readFileSync(path).subarray(0, 100));
    await assert.rejects(
      () => new KeyStats(3, f, 10, moment, dir).prepareSolve(),
      (e: Error) => e.message.includes(path) && /bytes, a Cholesky factor of width 37 has/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
