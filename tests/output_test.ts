// experiments/output.ts ProgressBar: in place on a terminal, about `lines` plain lines in a log, an ETA
// from the rate so far, and a final line at 100%.
import assert from "node:assert/strict";
import { formatSeconds, ProgressBar } from "../experiments/output.ts";

function sink(terminal: boolean) {
  const chunks: string[] = [];
  return {
    chunks,
    stream: {
      isTerminal: () => terminal,
      writeSync: (p: Uint8Array) => {
        chunks.push(new TextDecoder().decode(p));
        return p.length;
      },
    },
  };
}

Deno.test("progress bar: the line shows the bar, counts, share, elapsed time and ETA", () => {
  const bar = new ProgressBar("facts", 40);
  assert.equal(
    bar.line(10, 30, "Anna"),
    "facts [#####---------------] 10/40 25%  30s elapsed, ETA 1m30s  Anna",
  );
  assert.equal(
    bar.line(0, 0),
    "facts [--------------------] 0/40 0%  0s elapsed",
    "no ETA before anything is done",
  );
  assert.equal(
    bar.line(40, 95),
    "facts [####################] 40/40 100%  1m35s elapsed",
    "no ETA at the end",
  );
  // A resumed run: the 30 items done before count towards the share, not the rate (10 in 20 s here).
  const resumed = new ProgressBar("steps", 100, { already: 30 });
  assert.equal(resumed.line(30, 5), "steps [######--------------] 30/100 30%  5s elapsed");
  assert.equal(resumed.line(40, 20), "steps [########------------] 40/100 40%  20s elapsed, ETA 2m00s");
  const mb = new ProgressBar("f.json", 4e6, { format: (n) => `${(n / 1e6).toFixed(1)} MB` });
  assert.match(mb.line(1e6, 1), /^f\.json \[#{5}-{15}\] 1\.0 MB\/4\.0 MB 25% /);
});

Deno.test("progress bar: a log gets about `lines` plain lines and the last one; a terminal is redrawn in place", () => {
  const log = sink(false);
  const bar = new ProgressBar("items", 1000, { stream: log.stream, lines: 10 });
  for (let i = 1; i <= 1000; i++) bar.update(i);
  bar.update(1000); // a second final report adds nothing
  assert.equal(log.chunks.length, 11, "the first item, then one line per tenth, the last at 100%");
  assert.ok(log.chunks.every((c) => c.endsWith("\n") && !c.includes("\r")));
  assert.match(log.chunks.at(-1)!, /^items \[#{20}\] 1000\/1000 100%/);

  const tty = sink(true);
  const live = new ProgressBar("items", 3, { stream: tty.stream });
  live.update(1);
  live.update(3);
  assert.ok(tty.chunks.every((c) => c.startsWith("\r\x1b[K")), "redrawn in place");
  assert.ok(tty.chunks.at(-1)!.endsWith("\n") && !tty.chunks[0].endsWith("\n"), "a newline only at the end");
});

Deno.test("formatSeconds: seconds, minutes, hours, and ? for an unknown time", () => {
  assert.deepEqual([42.4, 59.6, 185, 3720, NaN, Infinity].map(formatSeconds), [
    "42s",
    "1m00s",
    "3m05s",
    "1h02m",
    "?",
    "?",
  ]);
});
