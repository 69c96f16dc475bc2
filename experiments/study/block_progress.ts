// What a sweep's progress bar counts, beyond its stored results, while edit blocks run (sweep.ts).
//
// A block stores its results only after its v* / z optimisations and FT-L training, most of its time
// (BLOCK_OPTIMISATION_SHARE), so counting stored results alone left the bar standing for a block's minutes,
// then jumping, and its ETA swung between a third and three times the time left. And with `--processes`,
// other processes of the run hold blocks too: counting such a block whole when this process's loop passed
// it put a block just begun at 100% (an "ETA 32s" 11 s into a 9-minute run). So:
//
//   - this process's running block counts as its optimisations' steps advance (that share of its results
//     at the end of them), each stored result adding the rest;
//   - a block another process holds counts as far as this process's block has come (the blocks claimed
//     right after it started about when it did, those before it earlier, so no less far), or by its results
//     stored where those are more, and never less than it counted before (the bar does not go back);
//   - once this process's loop has passed every block, those others still run count whole (the run waits
//     for them: the last, short blocks).

/** The share of an edit block's time its v* / z optimisations and FT-L training take, run ahead of its
 *  scoring (72% of a 24-fact block on the software adapter, bench/RESULTS.md). */
export const BLOCK_OPTIMISATION_SHARE = 0.7;

/** What BlockProgress asks the run's store (sweep.ts: the ResultStore and the run's claims). */
export interface BlockLookup {
  /** Whether another process of the run has claimed block k. */
  claimed(k: number): boolean;
  /** Whether the result with this key is stored. */
  stored(key: string): boolean;
}

/** The progress credit of a sweep's edit blocks (see the file header). */
export class BlockProgress {
  private running = false;
  private block = -1; // the block this process runs, or ran last
  private doneAtStart = 0; // the count of stored results when it started
  private readonly steps = new Map<string, number>(); // each optimisation side's share of steps done, 0..1
  private readonly others = new Map<number, { credited: number; stored: number }>();
  private looked = -Infinity; // when the store was last looked at for the other processes' blocks

  /**
   * @param blockKeys each block's result keys, in the order its results are stored
   * @param lookup the run's store; null when no other process shares the blocks
   * @param now the clock, in ms (performance.now; a test's own)
   */
  constructor(
    private readonly blockKeys: readonly (readonly string[])[],
    private readonly lookup: BlockLookup | null,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Block k's results. */
  items(k: number): number {
    return this.blockKeys[k].length;
  }

  /** This process starts block b, with `done` results counted (stored) so far. */
  start(b: number, done: number): void {
    Object.assign(this, { running: true, block: b, doneAtStart: done, looked: -Infinity });
    this.steps.clear();
  }

  /** One of the running block's optimisation sides ("values", "ft") has done `share` (0..1) of its steps. */
  step(side: string, share: number): void {
    if (this.running) this.steps.set(side, Math.min(1, Math.max(0, share)));
  }

  /** This process's block has ended (stored, or given up). */
  finish(): void {
    this.running = false;
  }

  /** The loop passed block b, which another process of the run holds. */
  passOther(b: number): void {
    if (!this.others.has(b)) this.others.set(b, { credited: 0, stored: 0 });
  }

  /** The loop has passed every block: the results of the blocks other processes still run, to count as
   *  done (whole) from now on. */
  endLoop(): number {
    let rest = 0;
    for (const k of this.others.keys()) rest += this.items(k);
    this.others.clear();
    return rest;
  }

  /** The results to count beyond `done` (the stored results this process counted) now. */
  credit(done: number): number {
    if (this.now() - this.looked > 1000 && (this.running || this.others.size > 0)) this.lookAtOthers();
    let own = 0, share = 0;
    if (this.running) {
      const items = this.items(this.block), stored = done - this.doneAtStart;
      const sides = [...this.steps.values()];
      const optimised = sides.length ? sides.reduce((a, b) => a + b, 0) / sides.length : 1;
      own = BLOCK_OPTIMISATION_SHARE * optimised * (items - stored);
      share = items > 0 ? (stored + own) / items : 1;
    }
    let others = 0;
    for (const [k, other] of this.others) {
      other.credited = Math.max(other.credited, other.stored, share * this.items(k));
      others += other.credited;
    }
    return own + others;
  }

  // At most once a second: the blocks other processes hold right after this one's, and how many results
  // of each block they hold are stored (from its first key on: one lookup per result stored since).
  private lookAtOthers(): void {
    this.looked = this.now();
    if (this.lookup === null) return;
    for (let k = this.block + 1; k < this.blockKeys.length && this.lookup.claimed(k); k++) this.passOther(k);
    for (const [k, other] of this.others) {
      const keys = this.blockKeys[k];
      while (other.stored < keys.length && this.lookup.stored(keys[other.stored])) other.stored++;
    }
  }
}
