// experiments/study/block_progress.ts: what a sweep's progress bar counts beyond its stored results while
// edit blocks run, on a fake store and clock: this process's block by its optimisations' steps, the blocks
// other processes hold by this one's progress or their stored results, never going back.
import assert from "node:assert/strict";
import { BLOCK_OPTIMISATION_SHARE, BlockProgress } from "../experiments/study/block_progress.ts";

/** a equals b up to rounding (the credit sums its parts in its own order). */
function near(a: number, b: number, what = "") {
  assert.ok(Math.abs(a - b) < 1e-9, `${what} ${a} != ${b}`);
}

/** Blocks of these sizes, their keys "k:i"; a store of the keys in `stored`, claims in `claimed`; a clock. */
function setup(sizes: number[]) {
  const blockKeys = sizes.map((n, k) => Array.from({ length: n }, (_, i) => `${k}:${i}`));
  const stored = new Set<string>(), claimed = new Set<number>();
  const clock = { ms: 0 };
  const lookups = { claimed: 0, stored: 0 };
  const progress = new BlockProgress(blockKeys, {
    claimed: (k) => (lookups.claimed++, claimed.has(k)),
    stored: (key) => (lookups.stored++, stored.has(key)),
  }, () => clock.ms);
  const store = (k: number, n: number) => blockKeys[k].slice(0, n).forEach((key) => stored.add(key));
  return { progress, stored, claimed, clock, lookups, store };
}

Deno.test("BlockProgress: one process's block counts as its optimisations' steps advance, then by its stored results", () => {
  const { progress } = setup([10, 20]);
  near(progress.credit(0), 0);
  progress.start(0, 5); // 5 results stored before (traces)
  progress.step("values", 0);
  progress.step("ft", 0);
  near(progress.credit(5), 0);
  progress.step("values", 0.5);
  progress.step("ft", 1);
  near(progress.credit(5), BLOCK_OPTIMISATION_SHARE * 0.75 * 10);
  progress.step("values", 1);
  near(progress.credit(5), BLOCK_OPTIMISATION_SHARE * 10);
  // Stored results count themselves; the rest keeps the optimisations' share.
  near(progress.credit(9), BLOCK_OPTIMISATION_SHARE * 6);
  progress.finish();
  near(progress.credit(15), 0);
  assert.equal(progress.endLoop(), 0);
});

Deno.test("BlockProgress: a block another process holds counts as far as this process's block has come, not whole when the loop passes it", () => {
  const { progress, claimed, clock, store } = setup([10, 10, 20]);
  // The other process claimed block 0 first: the loop passes it before this one has done anything.
  claimed.add(0);
  progress.passOther(0);
  near(progress.credit(0), 0, "a block just begun is not counted whole");
  claimed.add(1);
  progress.start(1, 0);
  progress.step("values", 0.5);
  const share = BLOCK_OPTIMISATION_SHARE * 0.5;
  near(progress.credit(0), share * 10 + share * 10);
  // The other process stores 8 of block 0's results: they count where they are more.
  store(0, 8);
  clock.ms += 1001;
  near(progress.credit(0), share * 10 + 8);
  // This process's block ends: block 0 counts as far as it (whole), and no less once it is not running.
  progress.step("values", 1);
  near(progress.credit(10), 10);
  progress.finish();
  near(progress.credit(10), 10);
  // Block 2, claimed by the other process while this one ran block 1, is picked up at the next look.
  claimed.add(2);
  progress.passOther(2);
  clock.ms += 1001;
  near(progress.credit(10), 10, "credited from this process's next block on");
  assert.equal(progress.endLoop(), 10 + 20, "the loop is over: the others' blocks count whole");
  near(progress.credit(40), 0);
});

Deno.test("BlockProgress: the blocks claimed right after this process's are looked up at most once a second, their stored results one lookup per new result", () => {
  const { progress, claimed, clock, lookups, store } = setup([4, 6, 6, 6]);
  claimed.add(0);
  progress.start(0, 0);
  claimed.add(1);
  claimed.add(2);
  progress.step("values", 1);
  near(
    progress.credit(0),
    BLOCK_OPTIMISATION_SHARE * 4 + BLOCK_OPTIMISATION_SHARE * 6 + BLOCK_OPTIMISATION_SHARE * 6,
    "blocks 1 and 2 beside it",
  );
  const after = { ...lookups };
  clock.ms += 500;
  progress.credit(0);
  assert.deepEqual(lookups, after, "no lookup within the second");
  store(1, 3);
  clock.ms += 600;
  const credit = progress.credit(0);
  assert.equal(lookups.stored - after.stored, 3 + 1 + 1, "3 new results in block 1, none in block 2");
  near(credit, BLOCK_OPTIMISATION_SHARE * 4 + BLOCK_OPTIMISATION_SHARE * 6 + BLOCK_OPTIMISATION_SHARE * 6);
  // Every result of block 2 stored: it counts whole.
  store(2, 6);
  clock.ms += 1001;
  near(progress.credit(0), BLOCK_OPTIMISATION_SHARE * 4 + BLOCK_OPTIMISATION_SHARE * 6 + 6);
});

Deno.test("BlockProgress: what it credits never decreases while the run goes on", () => {
  const { progress, claimed, clock, store } = setup([8, 8, 8, 8, 8]);
  const counts: number[] = [];
  let done = 0;
  const look = () => counts.push(done + progress.credit(done));
  claimed.add(0);
  progress.passOther(0);
  look();
  for (const b of [1, 3]) {
    claimed.add(b);
    progress.start(b, done);
    if (b === 1) claimed.add(2);
    for (let s = 0; s <= 4; s++) {
      progress.step("values", s / 4);
      progress.step("ft", s / 8);
      clock.ms += 700;
      look();
    }
    for (let i = 0; i < 8; i++) {
      done++;
      if (b === 1) store(0, i + 1);
      look();
    }
    progress.finish();
    look();
    if (b === 1) progress.passOther(2);
  }
  claimed.add(4);
  progress.passOther(4);
  look();
  done += progress.endLoop();
  look();
  assert.ok(counts.every((c, i) => i === 0 || c >= counts[i - 1]), counts.join(" "));
  assert.equal(counts.at(-1), 40);
});
