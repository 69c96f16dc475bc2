// experiments/data/hub_download.ts (and its fetch-model command) and engine/hub.ts against a local fake of
// the Hugging Face hub (its revision and tree APIs and /resolve/ downloads): the cache layout Python's
// huggingface_hub writes (refs/main, snapshots/<commit>/ symlinks into blobs/<sha256 or git oid>), only the
// files Locus reads, resume after a dropped connection, a checksum mismatch, a gated repository (401 without
// HF_TOKEN), offline reuse of the cache, and `--model ID` resolving to the snapshot in every command.
import assert from "node:assert/strict";
import { join } from "node:path";
import { getGpu } from "../engine/gpu.ts";
import { cachedSnapshot, parseHubId, repoCacheDir, resolveModelDir } from "../engine/hub.ts";
import { makeBatch, Model } from "../engine/model.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { fetchRepo, locusFiles } from "../experiments/data/hub_download.ts";
import { COMMIT, fakeHub, sha } from "./http_fixtures.ts";
import { assertClose, runScriptEnv } from "./util.ts";

const gpu = await getGpu();
const words = ["<unk>", "<|endoftext|>", "the", "cat", "sat"];
const modelDir = await Deno.makeTempDir();
const model = Model.random(
  gpu,
  { vocabSize: words.length, nPositions: 8, nEmbd: 8, nLayer: 1, nHead: 2, layerNormEpsilon: 1e-5 },
  3,
  true,
);
await model.save(modelDir);
await Deno.writeTextFile(
  `${modelDir}/tokenizer.json`,
  new WordLevelTokenizer(words, { unk: "<unk>", eos: "<|endoftext|>" }).toTokenizerJson(),
);

const repoFiles = (): Record<string, Uint8Array<ArrayBuffer>> => ({
  "config.json": Deno.readFileSync(`${modelDir}/config.json`),
  "model.safetensors": Deno.readFileSync(`${modelDir}/model.safetensors`),
  "tokenizer.json": Deno.readFileSync(`${modelDir}/tokenizer.json`),
  "pytorch_model.bin": new TextEncoder().encode("not read by Locus"),
  "onnx/model.onnx": new TextEncoder().encode("nor this"),
});

Deno.test("fetch-model: Python's hub cache layout, only Locus's files, then --model ID finds the snapshot", async () => {
  const hub = fakeHub({ "org/tiny": { files: repoFiles() } });
  const cacheDir = await Deno.makeTempDir();
  try {
    const r = await fetchRepo("org/tiny", { cacheDir, endpoint: hub.origin, token: null });
    const storage = join(cacheDir, "models--org--tiny");
    assert.equal(repoCacheDir("org/tiny", "model", cacheDir), storage);
    assert.equal(r.commit, COMMIT);
    assert.equal(r.snapshot, join(storage, "snapshots", COMMIT));
    assert.equal(Deno.readTextFileSync(join(storage, "refs", "main")), COMMIT);
    assert.deepEqual(r.files.map((f) => [f.path, f.how]).sort(), [
      ["config.json", "downloaded"],
      ["model.safetensors", "downloaded"],
      ["tokenizer.json", "downloaded"],
    ]);
    const files = repoFiles();
    const weights = Deno.readLinkSync(join(r.snapshot, "model.safetensors"));
    assert.equal(weights, `../../blobs/${sha("sha256", files["model.safetensors"])}`);
    const config = Deno.readLinkSync(join(r.snapshot, "config.json"));
    assert.equal(
      config,
      `../../blobs/${sha("sha1", files["config.json"], `blob ${files["config.json"].length}\0`)}`,
    );
    for (const name of ["config.json", "model.safetensors", "tokenizer.json"]) {
      assert.deepEqual(Deno.readFileSync(join(r.snapshot, name)), files[name], name);
    }
    assert.deepEqual(
      [...Deno.readDirSync(join(storage, "blobs"))].length,
      3,
      "pytorch_model.bin, onnx/ skipped",
    );

    // The snapshot loads like the folder it came from.
    const loaded = await Model.load(gpu, r.snapshot);
    const batch = makeBatch([[2, 3, 4]]);
    assertClose(
      await loaded.forward(batch).logits.read(),
      await model.forward(batch).logits.read(),
      0,
      "logits",
    );

    // A second run downloads nothing; with the hub unreachable the cached snapshot is used.
    const before = hub.requests.length;
    const again = await fetchRepo("org/tiny", { cacheDir, endpoint: hub.origin, token: null });
    assert.deepEqual(again.files.map((f) => f.how), ["cached", "cached", "cached"]);
    assert.ok(hub.requests.slice(before).every((q) => q.path.startsWith("/api/")), "only the API was asked");
    const logs: string[] = [];
    const offline = await fetchRepo("org/tiny", {
      cacheDir,
      endpoint: "http://127.0.0.1:9",
      token: null,
      log: (l) => logs.push(l),
    });
    assert.equal(offline.snapshot, r.snapshot);
    assert.match(logs.join("\n"), /http:\/\/127\.0\.0\.1:9 unreachable .*using the cached/);

    // --model ID in a command: the snapshot, by hub id (and @revision); else how to fetch it.
    const env = { HF_HUB_CACHE: cacheDir };
    const tokenize = await runScriptEnv(
      env,
      "experiments/commands/predict.ts",
      "tokenize",
      "--model",
      "org/tiny",
      "--text",
      "the cat",
    );
    assert.equal(tokenize.code, 0, tokenize.stderr);
    assert.equal(tokenize.stdout.trim(), "2 3");
    assert.equal(await cachedSnapshot("org/tiny", COMMIT, "model", cacheDir), r.snapshot);
    assert.equal(await cachedSnapshot("org/tiny", "v2", "model", cacheDir), null);
    const missing = await runScriptEnv(
      env,
      "experiments/commands/predict.ts",
      "tokenize",
      "--model",
      "org/other",
      "--text",
      "x",
    );
    assert.equal(missing.code, 1);
    assert.match(
      missing.stderr,
      /--model org\/other: no such folder, and revision main of org\/other is not in the Hugging Face cache \(.*models--org--other; HF_HUB_CACHE or HF_HOME choose the cache\); download it with \.\/locus task fetch-model org\/other/,
    );
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("fetch-model: a dropped connection resumes with a Range request; a wrong checksum leaves nothing", async () => {
  const hub = fakeHub({
    "org/drop": { files: repoFiles(), drop: "model.safetensors" },
    "org/bad": { files: repoFiles(), corrupt: "model.safetensors" },
  });
  const cacheDir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () => fetchRepo("org/drop", { cacheDir, endpoint: hub.origin, token: null }),
      /model\.safetensors: download interrupted after 100 of \d+ bytes .*run again to resume/,
    );
    const blobs = join(cacheDir, "models--org--drop", "blobs");
    const partial = [...Deno.readDirSync(blobs)].map((e) => e.name).filter((n) => n.endsWith(".incomplete"));
    assert.equal(partial.length, 1);
    assert.equal(await cachedSnapshot("org/drop", "main", "model", cacheDir), null, "no refs/main yet");
    assert.equal(Deno.statSync(join(blobs, partial[0])).size, 100);
    const r = await fetchRepo("org/drop", { cacheDir, endpoint: hub.origin, token: null });
    const weights = r.files.find((f) => f.path === "model.safetensors")!;
    assert.deepEqual([weights.how, weights.resumedFrom], ["downloaded", 100]);
    assert.ok(hub.requests.some((q) => q.path.endsWith("/model.safetensors") && q.range === "bytes=100-"));
    assert.deepEqual(
      Deno.readFileSync(join(r.snapshot, "model.safetensors")),
      repoFiles()["model.safetensors"],
    );

    await assert.rejects(
      () => fetchRepo("org/bad", { cacheDir, endpoint: hub.origin, token: null }),
      /org\/bad\/resolve\/[0-9a-f]{40}\/model\.safetensors: checksum mismatch: sha256 [0-9a-f]{64}, expected [0-9a-f]{64}; the downloaded file was deleted/,
    );
    const left = [...Deno.readDirSync(join(cacheDir, "models--org--bad", "blobs"))].map((e) => e.name);
    assert.ok(!left.some((n) => n.endsWith(".incomplete")), "no partial file is kept");
    assert.throws(
      () => Deno.lstatSync(join(cacheDir, "models--org--bad", "snapshots", COMMIT, "model.safetensors")),
      Deno.errors.NotFound,
    );
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("fetch-model: a gated repository asks for HF_TOKEN; with it the files come (CLI)", async () => {
  const hub = fakeHub({ "org/gated": { files: repoFiles(), token: "hf_secret" } });
  const cacheDir = await Deno.makeTempDir();
  const home = await Deno.makeTempDir(); // no token file of a real login is read
  try {
    const env = { HF_ENDPOINT: hub.origin, HF_HUB_CACHE: cacheDir, HF_HOME: home };
    const refused = await runScriptEnv(env, "experiments/commands/fetch_model.ts", "org/gated");
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /fetch-model: org\/gated: HTTP 401: the repository is gated or private \(or does not exist\)\. Accept its terms on http:\/\/127\.0\.0\.1:\d+\/org\/gated .* set HF_TOKEN=hf_\.\.\./,
    );
    const wrong = await runScriptEnv(
      { ...env, HF_TOKEN: "hf_wrong" },
      "experiments/commands/fetch_model.ts",
      "org/gated",
    );
    assert.match(wrong.stderr, /HTTP 401: the hub refused the token in HF_TOKEN/);
    const ok = await runScriptEnv(
      { ...env, HF_TOKEN: "hf_secret" },
      "experiments/commands/fetch_model.ts",
      "org/gated",
    );
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /model\.safetensors \(\d+ bytes, downloaded\)/);
    assert.match(ok.stdout, /use it with --model org\/gated\n/);
    assert.match(ok.stderr, /model\.safetensors \[#{20}\]/, "a progress bar");
    assert.ok(
      hub.requests.filter((q) => q.path.includes("/resolve/")).every((q) =>
        q.authorization === "Bearer hf_secret"
      ),
    );
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("hub ids: what --model accepts besides folders; Locus's file selection", async () => {
  assert.deepEqual(parseHubId("openai-community/gpt2-xl"), {
    id: "openai-community/gpt2-xl",
    revision: "main",
  });
  assert.deepEqual(parseHubId("gpt2@float16"), { id: "gpt2", revision: "float16" });
  for (const bad of ["../x", "a/b/c", "/abs/path", "x@", "org/../x"]) {
    assert.equal(parseHubId(bad), null, bad);
  }
  // A path that cannot be a hub id comes back as it is: the command names its missing files.
  assert.equal(await resolveModelDir("./no/such/folder"), "./no/such/folder");
  await assert.rejects(
    () => resolveModelDir(`${modelDir}/config.json`),
    /config\.json: a file, not a model folder/,
  );
  assert.equal(await resolveModelDir(modelDir), modelDir);
  assert.deepEqual(
    [
      "config.json",
      "model-00001-of-00002.safetensors",
      "merges.txt",
      "pytorch_model.bin",
      "onnx/config.json",
      "consolidated.safetensors",
    ].filter(locusFiles),
    ["config.json", "model-00001-of-00002.safetensors", "merges.txt"],
  );
});
