// experiments/study/store.ts: a writer killed with SIGKILL and restarted loses nothing and duplicates
// nothing; shards partition the work exactly; merging; CSV escaping; bad input; settings
// fingerprints, attempt counts, missing and damaged files.
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { csvField } from "../experiments/output.ts";
import {
  fnv1a,
  mergeStores,
  parseShard,
  resultKey,
  type ResultRecord,
  ResultStore,
  settingsDifferences,
  shardFromEnv,
  shardItems,
  shardOf,
  type StoredResult,
  toCsv,
  writeCsv,
} from "../experiments/study/store.ts";

/** The result of work item i (deterministic). Self-contained: its source is also run by the writer
 *  subprocess below (via Function.prototype.toString). */
function recordFor(i: number): ResultRecord {
  return {
    sweep: "sweep-a",
    fact: `counterfact:${i}`,
    method: i % 2 === 0 ? "ROME" : "FT-L",
    layer: i % 5,
    problem: "error_injection",
    localization: "causal_tracing",
    metrics: { rewrite: i / 100, paraphrase: 1 - i / 200, success: i % 3 === 0 },
    hparams: { steps: 20, lr: 0.5 },
    model: { name: "tiny", layers: 6 },
    dataset: { name: "counterfact", index: i },
    adapter: { description: "test" },
    timings: { edit: 0.01 * i },
  };
}

async function withTempDir(body: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A `deno eval` process that writes items 0..n-1 it does not find in the store, printing each
 *  index once its transaction has committed, then "wrote K". */
function writer(dbPath: string, n: number, delayMs: number): Deno.Command {
  const storeUrl = new URL("../experiments/study/store.ts", import.meta.url).href;
  const code = `
    import { ResultStore } from ${JSON.stringify(storeUrl)};
    const recordFor = ${recordFor.toString()};
    const store = ResultStore.open(${JSON.stringify(dbPath)});
    let wrote = 0;
    for (let i = 0; i < ${n}; i++) {
      const record = recordFor(i);
      if (store.has(record)) continue;
      store.put(record);
      wrote++;
      console.log(i);
      await new Promise((r) => setTimeout(r, ${delayMs}));
    }
    store.close();
    console.log("wrote " + wrote);`;
  return new Deno.Command(Deno.execPath(), { args: ["eval", code], stdout: "piped", stderr: "piped" });
}

/** Runs the writer until it has printed `lines` indices, kills it with SIGKILL, and returns every
 *  index it printed (including lines still in the pipe when it died). */
async function killAfter(cmd: Deno.Command, lines: number): Promise<number[]> {
  const child = cmd.spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "", killed = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
    if (!killed && text.split("\n").length - 1 >= lines) {
      child.kill("SIGKILL");
      killed = true;
    }
  }
  await child.stderr.cancel();
  const status = await child.status;
  assert.equal(status.signal, "SIGKILL", `the writer finished before it was killed: ${text}`);
  return text.split("\n").filter((l) => l !== "").map(Number);
}

Deno.test("kill -9 mid-sweep, reopen, resume: nothing lost, nothing duplicated", async () => {
  await withTempDir(async (dir) => {
    const db = `${dir}/results.db`;
    const N = 60;
    const printed = await killAfter(writer(db, N, 20), 5);
    const afterKill = ResultStore.open(db);
    const stored = [...afterKill.results()];
    afterKill.close();
    // Every index printed was committed; at most the one in flight more; far from all N.
    assert.ok(
      stored.length >= printed.length && stored.length <= printed.length + 1,
      `${stored.length} stored, ${printed.length} printed`,
    );
    assert.ok(stored.length < N);
    for (const i of printed) {
      assert.ok(stored.some((r) => r.key === resultKey(recordFor(i))), `committed item ${i} is missing`);
    }

    const resumed = await writer(db, N, 0).output();
    assert.equal(resumed.code, 0, new TextDecoder().decode(resumed.stderr));
    const out = new TextDecoder().decode(resumed.stdout).trim().split("\n");
    assert.equal(
      out.at(-1),
      `wrote ${N - stored.length}`,
      "the resumed run writes exactly the missing items",
    );
    const again = await writer(db, N, 0).output();
    assert.equal(new TextDecoder().decode(again.stdout).trim(), "wrote 0", "a finished sweep writes nothing");

    const store = ResultStore.open(db);
    const all = [...store.results()];
    assert.equal(store.count(), N);
    assert.equal(new Set(all.map((r) => r.key)).size, N);
    for (let i = 0; i < N; i++) {
      const r = store.get(recordFor(i))!;
      const { key: _key, createdAt: _createdAt, ...content } = r;
      assert.deepEqual(content, recordFor(i), `item ${i}`);
    }
    // Insertion order: what survived the kill comes first.
    assert.deepEqual(all.slice(0, stored.length).map((r) => r.key), stored.map((r) => r.key));
    store.close();
  });
});

Deno.test("put is insert-or-ignore; has, get, count and filters", async () => {
  await withTempDir((dir) => {
    const store = ResultStore.open(`${dir}/r.db`);
    assert.equal(store.put(recordFor(1)), true);
    assert.equal(store.put({ ...recordFor(1), metrics: { rewrite: 99 } }), false);
    assert.deepEqual(store.get(recordFor(1))!.metrics, recordFor(1).metrics, "the first result is kept");
    assert.equal(store.has(recordFor(1)), true);
    assert.equal(store.has(resultKey(recordFor(1))), true);
    assert.equal(store.has(recordFor(2)), false);
    assert.equal(store.get(recordFor(2)), undefined);
    for (let i = 2; i < 10; i++) store.put(recordFor(i));
    store.put({ ...recordFor(10), layer: null, hparams: undefined });
    assert.equal(store.count(), 10);
    assert.equal(store.count({ method: "ROME" }), 5); // 2, 4, 6, 8, 10
    assert.deepEqual([...store.results({ method: "FT-L", layer: 3 })].map((r) => r.fact), ["counterfact:3"]);
    assert.deepEqual([...store.results({ layer: null })].map((r) => r.fact), ["counterfact:10"]);
    assert.deepEqual(
      store.get({ ...recordFor(10), layer: null })!.hparams,
      {},
      "absent JSON fields are stored as {}",
    );
    assert.throws(
      () => store.put({ ...recordFor(11), metrics: { rewrite: NaN } }),
      /metrics.rewrite is NaN, which JSON cannot store/,
    );
    assert.throws(
      () => store.put({ ...recordFor(11), timings: { edit: [1, Infinity] } }),
      /timings.edit\[1\] is Infinity/,
    );
    assert.throws(() => store.put({ ...recordFor(11), sweep: "" }), /sweep must be a non-empty string/);
    assert.throws(
      () => store.put({ ...recordFor(11), layer: 1.5 }),
      /layer must be an integer or null, got 1.5/,
    );
    assert.equal(store.count(), 10, "rejected results are not written");
    store.close();
  });
});

Deno.test("settings: the first run records them, the same pass, others are refused with the differences unless forced", async () => {
  await withTempDir((dir) => {
    const store = ResultStore.open(`${dir}/r.db`);
    try {
      const a = { seed: 0, window: { mlp: 2 }, kinds: ["mlp"] };
      assert.deepEqual(store.checkSettings("s", a), []);
      assert.deepEqual(
        store.checkSettings("s", { kinds: ["mlp"], window: { mlp: 2 }, seed: 0 }),
        [],
        "key order",
      );
      assert.deepEqual(store.checkSettings("other", { seed: 5 }), [], "settings are per sweep");
      const b = { seed: 0, window: { mlp: 3, attn: 1 }, kinds: ["mlp"] };
      assert.throws(
        () => store.checkSettings("s", b),
        /r\.db: sweep "s" was run with other settings \(window\.attn: stored \(none\), now 1; window\.mlp: stored 2, now 3\)/,
      );
      assert.deepEqual(store.checkSettings("s", b, true), [
        "window.attn: stored (none), now 1",
        "window.mlp: stored 2, now 3",
      ]);
      assert.deepEqual(store.checkSettings("s", b), [], "forced settings are on record");
      assert.throws(() => store.checkSettings("s", { seed: NaN }), /seed is NaN/);
    } finally {
      store.close();
    }
    assert.deepEqual(settingsDifferences({ a: [1, 2] }, { a: [1, 2] }), []);
    assert.deepEqual(settingsDifferences({ a: [1, 2] }, { a: [2, 1] }), ["a: stored [1,2], now [2,1]"]);
  });
});

Deno.test("merge: shards run under different settings are a reported conflict; bad sources leave no target", async () => {
  await withTempDir((dir) => {
    for (const [i, seed] of [[0, 1], [1, 2]]) {
      const shard = ResultStore.open(`${dir}/s${i}.db`);
      shard.checkSettings("sweep-a", { seed });
      shard.put(recordFor(i));
      shard.close();
    }
    const report = mergeStores(`${dir}/all.db`, [`${dir}/s0.db`, `${dir}/s1.db`]);
    assert.equal(report.inserted, 2);
    assert.deepEqual(report.conflicts, ['settings of sweep "sweep-a" differ between stores']);
    // A missing or damaged source is refused before the target exists.
    assert.throws(
      () => mergeStores(`${dir}/new.db`, [`${dir}/s0.db`, `${dir}/gone.db`]),
      /merge: cannot open source database .*gone\.db/,
    );
    assert.throws(() => Deno.statSync(`${dir}/new.db`), Deno.errors.NotFound);
  });
});

Deno.test("attempts count starts until the work is finished; missing and damaged files are clear errors", async () => {
  await withTempDir(async (dir) => {
    const store = ResultStore.open(`${dir}/r.db`);
    assert.deepEqual([store.attempt("b"), store.attempt("b"), store.attempt("c")], [0, 1, 0]);
    store.finished("b");
    assert.equal(store.attempt("b"), 0);
    store.put(recordFor(1));
    store.close();

    assert.throws(
      () => ResultStore.open(`${dir}/none.db`, { create: false }),
      /none\.db: no results store there/,
    );
    assert.throws(() => Deno.statSync(`${dir}/none.db`), Deno.errors.NotFound);
    const bytes = await Deno.readFile(`${dir}/r.db`);
    await Deno.writeFile(
      `${dir}/text.db`,
      new TextEncoder().encode("not a database, just text ".repeat(200)),
    );
    assert.throws(() => ResultStore.open(`${dir}/text.db`), /text\.db: not a readable results database/);
    // Page 2 (the results table's b-tree) overwritten: caught by the integrity check at open.
    const pageSize = new DataView(bytes.buffer).getUint16(16);
    const damaged = bytes.slice();
    damaged.fill(0x5a, pageSize, pageSize + 12);
    await Deno.writeFile(`${dir}/damaged.db`, damaged);
    assert.throws(
      () => ResultStore.open(`${dir}/damaged.db`),
      /damaged\.db: (the results database is damaged|not a readable results database)/,
    );
  });
});

Deno.test("claims: among the processes of one run (two handles on one file) the first to claim a block gets it; another run claims afresh; claimed only asks", async () => {
  await withTempDir((dir) => {
    const [a, b] = [ResultStore.open(`${dir}/r.db`), ResultStore.open(`${dir}/r.db`)];
    try {
      assert.deepEqual([a.claim("run1", "block 0"), b.claim("run1", "block 0")], [true, false]);
      assert.deepEqual([b.claim("run1", "block 1"), a.claim("run1", "block 1")], [true, false]);
      // Asking whether a block is held claims nothing.
      assert.deepEqual([a.claimed("run1", "block 1"), a.claimed("run1", "block 2")], [true, false]);
      assert.deepEqual([a.claimed("run2", "block 0"), b.claim("run1", "block 2")], [false, true]);
      // A later run (a resumed study) takes every block again; what is stored it then skips.
      assert.deepEqual([b.claim("run2", "block 0"), a.claim("run2", "block 0")], [true, false]);
    } finally {
      a.close();
      b.close();
    }
  });
});

Deno.test("a database of another schema version is refused", async () => {
  await withTempDir((dir) => {
    ResultStore.open(`${dir}/r.db`).close();
    const raw = new DatabaseSync(`${dir}/r.db`);
    raw.exec("PRAGMA user_version = 7");
    raw.close();
    assert.throws(
      () => ResultStore.open(`${dir}/r.db`),
      /r.db: results schema version 7, this code reads version 1/,
    );
  });
});

Deno.test("shards from job-array variables: SLURM (with a minimum index), Kubernetes Indexed Jobs, errors", () => {
  assert.equal(shardFromEnv({}), undefined);
  assert.deepEqual(shardFromEnv({ SLURM_ARRAY_TASK_ID: "3", SLURM_ARRAY_TASK_COUNT: "4" })!.shard, {
    index: 3,
    count: 4,
  });
  const slurm = shardFromEnv({
    SLURM_ARRAY_TASK_ID: "5",
    SLURM_ARRAY_TASK_COUNT: "8",
    SLURM_ARRAY_TASK_MIN: "1",
  })!;
  assert.deepEqual(slurm.shard, { index: 4, count: 8 });
  assert.match(slurm.source, /^SLURM \(SLURM_ARRAY_TASK_ID=5 - SLURM_ARRAY_TASK_MIN=1/);
  const k8s = shardFromEnv({ JOB_COMPLETION_INDEX: "0", LOCUS_SHARD_COUNT: "2" })!;
  assert.deepEqual(k8s.shard, { index: 0, count: 2 });
  assert.match(k8s.source, /^Kubernetes/);
  assert.throws(
    () => shardFromEnv({ JOB_COMPLETION_INDEX: "1" }),
    /JOB_COMPLETION_INDEX is set but LOCUS_SHARD_COUNT is not/,
  );
  assert.throws(
    () => shardFromEnv({ SLURM_ARRAY_TASK_ID: "8", SLURM_ARRAY_TASK_COUNT: "4" }),
    /SLURM_ARRAY_TASK_ID=8, SLURM_ARRAY_TASK_COUNT=4: not a shard k of n .* without a step/,
  );
  assert.throws(
    () => shardFromEnv({ SLURM_ARRAY_TASK_ID: "x", SLURM_ARRAY_TASK_COUNT: "4" }),
    /SLURM_ARRAY_TASK_ID="x"/,
  );
});

Deno.test("shards: FNV-1a test vectors, parsing, an exact and balanced partition", () => {
  // Published FNV-1a 32-bit test vectors.
  assert.equal(fnv1a(""), 0x811c9dc5);
  assert.equal(fnv1a("a"), 0xe40c292c);
  assert.equal(fnv1a("foobar"), 0xbf9cf968);
  assert.deepEqual(parseShard("2/5"), { index: 2, count: 5 });
  assert.deepEqual(parseShard("0/1"), { index: 0, count: 1 });
  assert.throws(() => parseShard("5/5"), /k must be in 0..4 \(shards are numbered from 0\)/);
  assert.throws(() => parseShard("1/0"), /n must be at least 1/);
  assert.throws(() => parseShard("1-4"), /expected k\/n/);

  const items = Array.from({ length: 1000 }, (_, i) => recordFor(i));
  const keyOf = (r: ResultRecord) => resultKey(r);
  for (const n of [1, 3, 8]) {
    const shards = Array.from(
      { length: n },
      (_, k) => shardItems(items, { index: k, count: n }, (it, count) => shardOf(keyOf(it), count)),
    );
    const seen = shards.flat().map(keyOf);
    assert.equal(seen.length, items.length, `n=${n}: every item in exactly one shard`);
    assert.deepEqual(new Set(seen), new Set(items.map(keyOf)));
    for (const s of shards) {
      assert.ok(Math.abs(s.length - 1000 / n) < 0.2 * (1000 / n) + 10, `n=${n}: shard of ${s.length}`);
    }
    // Order within a shard follows the input; the shard depends on the key only.
    for (const s of shards) assert.deepEqual(s, items.filter((it) => s.includes(it)));
  }
  assert.equal(shardOf("a", 1000), 0xe40c292c % 1000);
});

Deno.test("merge shard databases: all rows once, identical duplicates skipped, conflicts reported", async () => {
  await withTempDir((dir) => {
    const N = 40, n = 3;
    const items = Array.from({ length: N }, (_, i) => recordFor(i));
    const sources = Array.from({ length: n }, (_, k) => {
      const path = `${dir}/shard${k}.db`;
      const store = ResultStore.open(path);
      const mine = shardItems(items, { index: k, count: n }, (it, count) => shardOf(resultKey(it), count));
      for (const it of mine) store.put(it);
      store.close();
      return path;
    });
    const target = `${dir}/all.db`;
    assert.deepEqual(mergeStores(target, sources), { inserted: N, duplicates: 0, conflicts: [] });
    // A late shard: one identical result, one that disagrees, one new.
    const late = ResultStore.open(`${dir}/late.db`);
    late.put(recordFor(5));
    late.put({ ...recordFor(7), metrics: { rewrite: -1 } });
    late.put(recordFor(100));
    late.close();
    assert.deepEqual(mergeStores(target, [`${dir}/late.db`]), {
      inserted: 1,
      duplicates: 1,
      conflicts: [resultKey(recordFor(7))],
    });
    const merged = ResultStore.open(target);
    assert.equal(merged.count(), N + 1);
    assert.deepEqual(
      merged.get(recordFor(7))!.metrics,
      recordFor(7).metrics,
      "the target's row wins a conflict",
    );
    for (let i = 0; i < N; i++) {
      assert.deepEqual(merged.get(recordFor(i))!.dataset, { name: "counterfact", index: i });
    }
    merged.close();

    assert.throws(
      () => mergeStores(target, [`${dir}/missing.db`]),
      /cannot open source database .*missing.db/,
    );
    const other = new DatabaseSync(`${dir}/other.db`);
    other.exec("CREATE TABLE t (x)");
    other.close();
    assert.throws(() => mergeStores(target, [`${dir}/other.db`]), /other.db has no results table/);
  });
});

Deno.test("CSV: RFC 4180 quoting, flattened JSON columns, missing fields empty", async () => {
  assert.equal(csvField("plain"), "plain");
  assert.equal(csvField("a,b"), '"a,b"');
  assert.equal(csvField('say "hi"'), '"say ""hi"""');
  assert.equal(csvField("two\nlines"), '"two\nlines"');
  assert.equal(csvField(" padded"), '" padded"');
  assert.equal(csvField(""), "");

  const base = recordFor(0);
  const a: StoredResult = {
    ...base,
    key: "k1",
    fact: "fact,with,commas",
    method: 'the "best" method',
    createdAt: "2026-01-01T00:00:00.000Z",
    metrics: { rewrite: 0.125, nested: { x: 1, y: "line\r\nbreak" } },
    hparams: { layers: [13, 17], note: null, on: true },
    model: {},
    dataset: {},
    adapter: {},
    timings: {},
  };
  const b: StoredResult = {
    ...a,
    key: "k2",
    fact: "f2",
    method: "ROME",
    layer: null,
    metrics: { rewrite: 1e-7 },
    hparams: {},
    timings: { edit: 2 },
  };
  assert.equal(
    toCsv([a, b]),
    [
      "key,sweep,fact,method,layer,problem,localization,created_at,metrics.nested.x,metrics.nested.y,metrics.rewrite,hparams.layers,hparams.note,hparams.on,timings.edit",
      'k1,sweep-a,"fact,with,commas","the ""best"" method",0,error_injection,causal_tracing,2026-01-01T00:00:00.000Z,1,"line\r\nbreak",0.125,"[13,17]",,true,',
      "k2,sweep-a,f2,ROME,,error_injection,causal_tracing,2026-01-01T00:00:00.000Z,,,1e-7,,,,2",
      "",
    ].join("\r\n"),
  );

  await withTempDir(async (dir) => {
    const store = ResultStore.open(`${dir}/r.db`);
    for (let i = 0; i < 6; i++) store.put(recordFor(i));
    store.put({ ...recordFor(6), sweep: "sweep-b" });
    assert.equal(await writeCsv(store.results({ sweep: "sweep-a" }), `${dir}/a.csv`), 6);
    const lines = Deno.readTextFileSync(`${dir}/a.csv`).trimEnd().split("\r\n");
    assert.equal(lines.length, 7);
    assert.ok(
      lines[0].startsWith(
        "key,sweep,fact,method,layer,problem,localization,created_at,metrics.paraphrase,metrics.rewrite,metrics.success,hparams.lr,",
      ),
    );
    assert.ok(lines[3].includes(`,counterfact:2,ROME,2,`));
    store.close();
  });
});
