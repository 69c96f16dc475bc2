// Tokenizers: GPT-2's byte-level BPE, a whitespace word-level tokenizer for Locus's own small models, and
// any other Hugging Face BPE tokenizer.json (Llama 2/3, Mistral, Qwen2/3, Gemma 1-3, GPT-NeoX...) through
// the `@huggingface/tokenizers` library (see HfTokenizer).
//
// All report, for every token, the [start, end) range of `text` (UTF-16 indices, so text.slice works)
// it came from. Fact-editing experiments need this to find "which tokens are the subject" in a prompt
// (causal tracing corrupts them, ROME edits at the last one): see subjectTokenRange.
//
// Byte-level BPE in three steps (Radford et al. 2019, GPT-2's encoder.py):
//   1. split the text around special tokens such as <|endoftext|>, which are looked up whole;
//   2. pre-tokenize each remaining span with GPT-2's regex into "pieces" (" world", "'s", "  ");
//   3. write each piece's UTF-8 bytes as printable characters (byte -> char table below) and merge
//      adjacent symbols in order of merge rank until no ranked pair is left; each symbol is a token.

import { Tokenizer as HfLibrary } from "npm:@huggingface/tokenizers@0.2";
import { io, joinPath as join } from "./io.ts";

/** Where BOS goes: `encode(text)` returns exactly what the model is fed for `text`. A tokenizer.json whose
 *  post-processor is a template with a special token before the text (Llama's "<s>", Gemma's "<bos>")
 *  gets that token first, as transformers' `tokenizer(text)` does; GPT-2, Qwen and the word-level
 *  tokenizer add none. So the ids of a continuation are never `encode(continuation)`: see targetIds. */
export interface Tokenizer {
  /** One more than the largest token id (a checkpoint may have more embedding rows: see tokenString). */
  readonly vocabSize: number;
  /** <|endoftext|> for GPT-2; null when the vocabulary has no end-of-sequence token. */
  readonly eosId: number | null;
  /** The token encode() puts before every text; null when it puts none. */
  readonly bosId: number | null;
  /** The token ids of `text`, with what the post-processor adds (BOS). */
  encode(text: string): number[];
  /** The text of the tokens, without those the post-processor adds (BOS) and without the one space a
   *  SentencePiece-style tokenizer prepends: the inverse of encode, as the Python library's decode. An id
   *  without a token (an embedding row beyond the tokenizer) is written as tokenString writes it. */
  decode(ids: number[]): string;
  /** The decoded text of one token (e.g. " Paris"); "<id 50300>" for an id no token has. */
  tokenString(id: number): string;
  /** Special tokens: BOS, EOS, <|endoftext|>, chat markers. Where the post-processor added one (an empty
   *  offset range) it is never part of a subject. */
  isSpecial(id: number): boolean;
  /** Raw vocabulary lookup (GPT-2 writes a leading space as "Ġ": idOf("ĠParis")). */
  idOf(token: string): number | undefined;
  /** ids plus, for each token, the [start, end) character range in `text` it came from (UTF-16 indices;
   *  a token the post-processor adds, such as BOS, gets [0, 0]). */
  encodeWithOffsets(text: string): { ids: number[]; offsets: [number, number][] };
}

/** The placeholder text of an id that no token has: checkpoints often have more embedding rows than the
 *  tokenizer has tokens (GPT-J 50400 for 50257, Pythia 50304, Qwen2 151936, Gemma 3 262208), and a
 *  prediction may land there. */
function missingToken(id: number): string {
  if (!Number.isSafeInteger(id) || id < 0) throw new Error(`token id ${id} is not an integer >= 0`);
  return `<id ${id}>`;
}

// ---------------------------------------------------------------------------------------------
// Shared helpers: JSON input checks and special tokens

function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${source}: not valid JSON (${(e as Error).message})`);
  }
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** Checks a {token: id} object (vocab.json, model.vocab) and returns it as a Map. */
function readVocabObject(vocab: unknown, where: string): Map<string, number> {
  if (!isObject(vocab)) throw new Error(`${where}: expected an object mapping token -> id`);
  const out = new Map<string, number>();
  const tokenOfId = new Map<number, string>();
  for (const [token, id] of Object.entries(vocab)) {
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
      throw new Error(
        `${where}: token ${JSON.stringify(token)} has id ${JSON.stringify(id)}, not an integer >= 0`,
      );
    }
    const other = tokenOfId.get(id);
    if (other !== undefined) {
      throw new Error(
        `${where}: tokens ${JSON.stringify(other)} and ${JSON.stringify(token)} share id ${id}`,
      );
    }
    tokenOfId.set(id, token);
    out.set(token, id);
  }
  if (out.size === 0) throw new Error(`${where}: the vocabulary is empty`);
  return out;
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

/** tokenizer.json's "added_tokens": tokens matched literally in the text before pre-tokenization. */
function readAddedTokens(added: unknown, source: string): AddedToken[] {
  if (added === undefined || added === null) return [];
  if (!Array.isArray(added)) throw new Error(`${source}: "added_tokens" must be an array`);
  return added.map((t, i) => {
    const where = `${source}: added_tokens[${i}]`;
    if (!isObject(t)) throw new Error(`${where} must be an object`);
    if (typeof t.id !== "number" || !Number.isSafeInteger(t.id) || t.id < 0) {
      throw new Error(`${where}: "id" must be an integer >= 0, got ${JSON.stringify(t.id)}`);
    }
    if (typeof t.content !== "string" || t.content === "") {
      throw new Error(`${where}: "content" must be a non-empty string`);
    }
    return { id: t.id, content: t.content, special: t.special === true };
  });
}

/** Parses a Hugging Face tokenizer.json and checks what both tokenizers require of it: a "model"
 *  object of the expected type and no normalizer (neither tokenizer applies one). */
function readTokenizerJson(
  json: string,
  source: string,
  modelType: "BPE" | "WordLevel",
): { root: Record<string, unknown>; model: Record<string, unknown> } {
  const root = parseJson(json, source);
  if (!isObject(root) || !isObject(root.model)) throw new Error(`${source}: missing the "model" object`);
  const model = root.model;
  if (model.type !== modelType) {
    throw new Error(`${source}: model.type is ${JSON.stringify(model.type)}, expected "${modelType}"`);
  }
  if (root.normalizer !== null && root.normalizer !== undefined) {
    throw new Error(`${source}: normalizers are not supported (found ${JSON.stringify(root.normalizer)})`);
  }
  return { root, model };
}

/** Which special token ends a sequence. tokenizer.json does not say (tokenizer_config.json does), so
 *  take a conventional name, or the only candidate. */
function pickEos(candidates: string[]): string | undefined {
  for (const name of ["<|endoftext|>", "</s>", "<eos>", "<|eos|>", "<|end_of_text|>"]) {
    if (candidates.includes(name)) return name;
  }
  return candidates.length === 1 ? candidates[0] : undefined;
}

/** A literal matcher for special tokens, longest first (so "<|a|>b" wins over "<|a|>"). */
function specialTokenPattern(specials: Iterable<string>): RegExp | null {
  const sorted = [...specials].sort((a, b) => b.length - a.length);
  if (sorted.length === 0) return null;
  const escaped = sorted.map((s) => s.replace(/[\^$\\.*+?()[\]{}|/]/g, "\\$&"));
  return new RegExp(escaped.join("|"), "g");
}

interface Span {
  start: number;
  end: number;
  /** The span is one special token, e.g. "<|endoftext|>". */
  special: boolean;
}

/** Cuts `text` into ordinary spans and special-token spans, in order, covering all of it. */
function splitOnSpecialTokens(text: string, pattern: RegExp | null): Span[] {
  const spans: Span[] = [];
  let at = 0;
  if (pattern) {
    for (const m of text.matchAll(pattern)) {
      if (m.index > at) spans.push({ start: at, end: m.index, special: false });
      spans.push({ start: m.index, end: m.index + m[0].length, special: true });
      at = m.index + m[0].length;
    }
  }
  if (at < text.length) spans.push({ start: at, end: text.length, special: false });
  return spans;
}

/** Token ids and character ranges [start, end) of `text`: each special-token span (matched by
 *  `pattern`) becomes the one id `specialId` gives it; each ordinary span is tokenized by `encodeSpan`,
 *  which appends its tokens' ids and ranges (in `text`: the span starts at `start`). */
function encodeAroundSpecials(
  text: string,
  pattern: RegExp | null,
  specialId: (token: string) => number,
  encodeSpan: (span: string, start: number, ids: number[], offsets: [number, number][]) => void,
): { ids: number[]; offsets: [number, number][] } {
  const ids: number[] = [];
  const offsets: [number, number][] = [];
  for (const span of splitOnSpecialTokens(text, pattern)) {
    const spanText = text.slice(span.start, span.end);
    if (span.special) {
      ids.push(specialId(spanText));
      offsets.push([span.start, span.end]);
    } else {
      encodeSpan(spanText, span.start, ids, offsets);
    }
  }
  return { ids, offsets };
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte-level BPE

/** GPT-2's pre-tokenization: contractions, optional space + letters / digits / other symbols, and
 *  whitespace runs (a run before a word leaves its last space to that word: "a  b" -> "a", " ", " b"). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Byte -> printable character, so every byte string is a plain string in vocab.json. Bytes that are
 *  visible Latin-1 characters stand for themselves; the other 68 (controls, space, 0x7f-0xa0, 0xad)
 *  are given the characters U+0100, U+0101, ... in byte order (space 0x20 becomes "Ġ" U+0120). */
const BYTE_TO_CHAR: string[] = (() => {
  const visible = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let next = 0x100;
  for (let b = 0; b < 256; b++) table.push(String.fromCharCode(visible(b) ? b : next++));
  return table;
})();
const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

const utf8Encoder = new TextEncoder();
// Not fatal: a partial multi-byte character decodes as U+FFFD; a leading U+FEFF is text, not a BOM.
const utf8Decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** UTF-8 length of a code point (a lone surrogate is written as U+FFFD: 3 bytes, as TextEncoder does). */
function utf8Length(codePoint: number): number {
  return codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4;
}

/** Pieces seen often (" the", " of") skip the merge loop; bounded so a long random text cannot grow it forever. */
const BPE_CACHE_LIMIT = 100_000;

/** GPT-2's byte-level BPE (vocab.json + merges.txt, or its tokenizer.json). */
export class BpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  /** GPT-2 puts no token before a text. */
  readonly bosId = null;
  /** id -> the bytes the token stands for (special tokens: their text in UTF-8). */
  private readonly tokenBytes: Uint8Array[] = [];
  private readonly specialPattern: RegExp | null;
  private readonly cache = new Map<string, number[]>();

  private constructor(
    /** token (byte-level string, e.g. "ĠParis") -> id */
    private readonly vocab: Map<string, number>,
    /** "left right" -> merge rank (lower merges first) */
    private readonly mergeRanks: Map<string, number>,
    /** added/special token text -> id; matched literally in the input, before pre-tokenization */
    private readonly specials: Map<string, number>,
    /** the added tokens marked special (<|endoftext|>) */
    private readonly specialIds: Set<number>,
    readonly eosId: number | null,
  ) {
    for (const [token, id] of vocab) {
      if (!specials.has(token)) this.tokenBytes[id] = Uint8Array.from(token, (c) => CHAR_TO_BYTE.get(c)!);
    }
    for (const [text, id] of specials) this.tokenBytes[id] = utf8Encoder.encode(text);
    this.vocabSize = this.tokenBytes.length;
    this.specialPattern = specialTokenPattern(specials.keys());
  }

  /** From GPT-2's vocab.json and merges.txt (their contents); `names` label error messages. */
  static fromFiles(
    vocabJson: string,
    mergesTxt: string,
    names = { vocab: "vocab.json", merges: "merges.txt" },
  ): BpeTokenizer {
    const vocab = readVocabObject(parseJson(vocabJson, names.vocab), names.vocab);
    const merges: [string, string][] = [];
    mergesTxt.split("\n").forEach((raw, i) => {
      const line = raw.replace(/\r$/, "");
      if (line === "" || (i === 0 && line.startsWith("#version"))) return;
      const parts = line.split(" ");
      if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
        throw new Error(
          `${names.merges} line ${i + 1}: expected two symbols separated by one space, got ${
            JSON.stringify(line)
          }`,
        );
      }
      merges.push([parts[0], parts[1]]);
    });
    // GPT-2's vocab.json lists <|endoftext|> among ordinary tokens; it is matched whole in text.
    const eos = vocab.get("<|endoftext|>");
    const specials = new Map(eos === undefined ? [] : [["<|endoftext|>", eos]]);
    return BpeTokenizer.build(vocab, merges, specials, new Set(specials.values()), eos ?? null, names);
  }

  /** From a Hugging Face tokenizer.json (its contents) with a byte-level BPE model, as GPT-2's. */
  static fromTokenizerJson(json: string, source = "tokenizer.json"): BpeTokenizer {
    const { root, model } = readTokenizerJson(json, source, "BPE");
    const pre = root.pre_tokenizer;
    if (!isObject(pre) || pre.type !== "ByteLevel") {
      throw new Error(
        `${source}: only a ByteLevel pre_tokenizer (GPT-2 style) is supported, found ${JSON.stringify(pre)}`,
      );
    }
    if (pre.add_prefix_space === true || pre.use_regex === false) {
      throw new Error(
        `${source}: ByteLevel pre_tokenizer needs add_prefix_space=false and use_regex=true, as GPT-2`,
      );
    }
    const vocab = readVocabObject(model.vocab, `${source}: model.vocab`);
    if (!Array.isArray(model.merges)) throw new Error(`${source}: model.merges must be an array`);
    // Older files write a merge as "left right", newer ones as ["left", "right"].
    const merges = model.merges.map((m, i): [string, string] => {
      const parts = typeof m === "string" ? m.split(" ") : m;
      if (
        !Array.isArray(parts) || parts.length !== 2 || parts.some((p) => typeof p !== "string" || p === "")
      ) {
        throw new Error(
          `${source}: model.merges[${i}] must be "left right" or ["left", "right"], got ${JSON.stringify(m)}`,
        );
      }
      return [parts[0], parts[1]];
    });
    const added = readAddedTokens(root.added_tokens, source);
    const vocabIds = new Set(vocab.values());
    for (const t of added) {
      const inVocab = vocab.get(t.content);
      if (inVocab !== undefined ? inVocab !== t.id : vocabIds.has(t.id)) {
        throw new Error(
          `${source}: added token ${JSON.stringify(t.content)} has id ${t.id}, which model.vocab gives to ${
            JSON.stringify([...vocab].find(([, id]) => id === t.id)?.[0] ?? null)
          }`,
        );
      }
    }
    const specials = new Map(added.map((t) => [t.content, t.id]));
    const specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    const eos = pickEos(added.filter((t) => t.special).map((t) => t.content));
    return BpeTokenizer.build(
      vocab,
      merges,
      specials,
      specialIds,
      eos === undefined ? null : specials.get(eos)!,
      { vocab: `${source}: model.vocab`, merges: `${source}: model.merges` },
    );
  }

  /** Checks that every byte has a token and every merge joins known tokens into a known token. */
  private static build(
    vocab: Map<string, number>,
    merges: [string, string][],
    specials: Map<string, number>,
    specialIds: Set<number>,
    eosId: number | null,
    where: { vocab: string; merges: string },
  ): BpeTokenizer {
    BYTE_TO_CHAR.forEach((c, b) => {
      if (!vocab.has(c)) {
        throw new Error(`${where.vocab}: no token for byte 0x${b.toString(16)} (${JSON.stringify(c)})`);
      }
    });
    for (const [token, id] of vocab) {
      if (specials.has(token)) continue;
      for (const c of token) {
        if (!CHAR_TO_BYTE.has(c)) {
          throw new Error(
            `${where.vocab}: token ${JSON.stringify(token)} (id ${id}) has ${
              JSON.stringify(c)
            }, not a byte-level character`,
          );
        }
      }
    }
    const mergeRanks = new Map<string, number>();
    merges.forEach(([left, right], rank) => {
      for (const part of [left, right, left + right]) {
        if (!vocab.has(part)) {
          throw new Error(
            `${where.merges}: merge ${rank + 1} "${left} ${right}": ${
              JSON.stringify(part)
            } is not in the vocabulary`,
          );
        }
      }
      const key = `${left} ${right}`;
      if (!mergeRanks.has(key)) mergeRanks.set(key, rank);
    });
    return new BpeTokenizer(vocab, mergeRanks, specials, specialIds, eosId);
  }

  /** The token ids of `text` (Tokenizer.encode). */
  encode(text: string): number[] {
    return this.encodeWithOffsets(text).ids;
  }

  encodeWithOffsets(text: string): { ids: number[]; offsets: [number, number][] } {
    return encodeAroundSpecials(
      text,
      this.specialPattern,
      (t) => this.specials.get(t)!,
      (span, start, ids, offsets) => {
        for (const m of span.matchAll(GPT2_SPLIT)) this.encodePiece(m[0], start + m.index, ids, offsets);
      },
    );
  }

  /** Appends the tokens of one pre-tokenized piece found at text[start...]. A token may end inside a
   *  multi-byte character (an emoji is often 2-3 tokens): each character is credited to the token
   *  holding its last byte, and the tokens before it get an empty range at the character's start.
   *  So the ranges tile the text exactly. */
  private encodePiece(piece: string, start: number, ids: number[], offsets: [number, number][]): void {
    let char = 0; // next character of `piece` not yet credited to a token (UTF-16 index)
    let charByte = 0; // UTF-8 bytes of piece before `char`
    let tokenEndByte = 0;
    for (const id of this.bpe(piece)) {
      tokenEndByte += this.tokenBytes[id].length;
      const from = char;
      while (char < piece.length) {
        const codePoint = piece.codePointAt(char)!;
        if (charByte + utf8Length(codePoint) > tokenEndByte) break;
        charByte += utf8Length(codePoint);
        char += codePoint > 0xffff ? 2 : 1;
      }
      ids.push(id);
      offsets.push([start + from, start + char]);
    }
  }

  /** The token ids of one piece: start from single bytes, repeatedly merge the lowest-ranked
   *  adjacent pair (every occurrence of it, left to right) until no pair has a rank. */
  private bpe(piece: string): number[] {
    const cached = this.cache.get(piece);
    if (cached) return cached;
    let symbols = Array.from(utf8Encoder.encode(piece), (b) => BYTE_TO_CHAR[b]);
    while (symbols.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const rank = this.mergeRanks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (rank !== undefined && rank < bestRank) [best, bestRank] = [i, rank];
      }
      if (best < 0) break;
      const [left, right] = [symbols[best], symbols[best + 1]];
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (symbols[i] === left && symbols[i + 1] === right) merged.push(left + symbols[++i]);
        else merged.push(symbols[i]);
      }
      symbols = merged;
    }
    // Every byte and every merge result is in the vocabulary (checked in build()).
    const ids = symbols.map((s) => this.vocab.get(s)!);
    if (this.cache.size >= BPE_CACHE_LIMIT) this.cache.clear();
    this.cache.set(piece, ids);
    return ids;
  }

  decode(ids: number[]): string {
    return utf8Decoder.decode(
      concatBytes(ids.map((id) => this.tokenBytes[id] ?? utf8Encoder.encode(missingToken(id)))),
    );
  }

  tokenString(id: number): string {
    const bytes = this.tokenBytes[id];
    return bytes === undefined ? missingToken(id) : utf8Decoder.decode(bytes);
  }

  idOf(token: string): number | undefined {
    return this.vocab.get(token) ?? this.specials.get(token);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Word-level tokenizer: one id per word or punctuation run, unknown words -> unk

/** \w as Oniguruma (the regex engine of HF tokenizers) reads it on Unicode text: letters and other
 *  alphabetic characters, marks, decimal digits, connector punctuation, and the Latin-1 digits ²³¹¼½¾.
 *  JavaScript's own \w is ASCII only. */
const WORD_CHAR = String.raw`\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u00b2\u00b3\u00b9\u00bc-\u00be`;
/** The Hugging Face pre-tokenizers a word-level tokenizer supports, as the regexes that find its pieces. */
export const PRE_TOKENIZERS = {
  /** HF "Whitespace": \w+|[^\w\s]+ (words, and runs of punctuation as their own tokens). */
  Whitespace: new RegExp(String.raw`[${WORD_CHAR}]+|[^${WORD_CHAR}\p{White_Space}]+`, "gu"),
  /** HF "WhitespaceSplit": anything between whitespace. */
  WhitespaceSplit: /[^\p{White_Space}]+/gu,
};
/** The Hugging Face pre-tokenizers a word-level tokenizer can split with: "Whitespace", "WhitespaceSplit". */
export type PreTokenizerName = keyof typeof PRE_TOKENIZERS;
const PUNCTUATION_TOKEN = new RegExp(String.raw`^[^${WORD_CHAR}\p{White_Space}]+$`, "u");

/** A word-level tokenizer (the embedded model's): one id per word or punctuation run. */
export class WordLevelTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly eosId: number | null;
  /** Locus's word-level models are fed no token before a text. */
  readonly bosId = null;
  /** The id of words not in the vocabulary. */
  readonly unkId: number;
  /** How text is split into words before the lookup. */
  readonly preTokenizer: PreTokenizerName;
  private readonly ids = new Map<string, number>();
  /** unk and eos: matched whole in text, so "<unk>" is not split into "<", "unk", ">". */
  private readonly specialPattern: RegExp | null;

  /** vocab[id] is the token's text. preTokenizer defaults to "Whitespace" (punctuation split off). */
  constructor(
    private readonly vocab: string[],
    opts: { unk: string; eos?: string; preTokenizer?: PreTokenizerName },
  ) {
    vocab.forEach((word, id) => {
      if (typeof word !== "string" || word === "") {
        throw new Error(`word-level vocab[${id}]: not a non-empty string`);
      }
      const other = this.ids.get(word);
      if (other !== undefined) {
        throw new Error(`word-level vocab: ${JSON.stringify(word)} appears at ids ${other} and ${id}`);
      }
      this.ids.set(word, id);
    });
    const lookup = (what: string, word: string) => {
      const id = this.ids.get(word);
      if (id === undefined) {
        throw new Error(`word-level vocab: the ${what} token ${JSON.stringify(word)} is not in it`);
      }
      return id;
    };
    this.vocabSize = vocab.length;
    this.unkId = lookup("unk", opts.unk);
    this.eosId = opts.eos === undefined ? null : lookup("eos", opts.eos);
    this.preTokenizer = opts.preTokenizer ?? "Whitespace";
    if (!Object.hasOwn(PRE_TOKENIZERS, this.preTokenizer)) {
      throw new Error(`word-level: unknown pre-tokenizer ${JSON.stringify(this.preTokenizer)}`);
    }
    this.specialPattern = specialTokenPattern(opts.eos === undefined ? [opts.unk] : [opts.unk, opts.eos]);
  }

  /** From a Hugging Face tokenizer.json (its contents) with a WordLevel model. */
  static fromTokenizerJson(json: string, source = "tokenizer.json"): WordLevelTokenizer {
    const { root, model } = readTokenizerJson(json, source, "WordLevel");
    const pre = root.pre_tokenizer;
    if (!isObject(pre) || (pre.type !== "Whitespace" && pre.type !== "WhitespaceSplit")) {
      throw new Error(
        `${source}: pre_tokenizer must be Whitespace or WhitespaceSplit, found ${JSON.stringify(pre)}`,
      );
    }
    const vocabMap = readVocabObject(model.vocab, `${source}: model.vocab`);
    const vocab: string[] = [];
    for (const [word, id] of vocabMap) vocab[id] = word;
    for (let id = 0; id < vocab.length; id++) {
      if (vocab[id] === undefined) {
        throw new Error(`${source}: model.vocab has no token with id ${id} (ids must be 0..n-1)`);
      }
    }
    if (typeof model.unk_token !== "string") throw new Error(`${source}: model.unk_token must be a string`);
    const unk = model.unk_token;
    if (!vocabMap.has(unk)) {
      throw new Error(`${source}: model.unk_token ${JSON.stringify(unk)} is not in model.vocab`);
    }
    const specials = readAddedTokens(root.added_tokens, source);
    for (const t of specials) {
      if (vocab[t.id] !== t.content) {
        throw new Error(
          `${source}: added token ${
            JSON.stringify(t.content)
          } has id ${t.id}, but model.vocab gives that id to ${JSON.stringify(vocab[t.id])}`,
        );
      }
    }
    const eos = pickEos(specials.filter((t) => t.special && t.content !== unk).map((t) => t.content));
    return new WordLevelTokenizer(vocab, { unk, eos, preTokenizer: pre.type as PreTokenizerName });
  }

  /** A Hugging Face tokenizer.json that fromTokenizerJson (and HF tokenizers) read back. */
  toTokenizerJson(): string {
    const special = [this.unkId, ...(this.eosId === null ? [] : [this.eosId])];
    return JSON.stringify(
      {
        version: "1.0",
        truncation: null,
        padding: null,
        added_tokens: special.map((id) => ({
          id,
          content: this.vocab[id],
          single_word: false,
          lstrip: false,
          rstrip: false,
          normalized: false,
          special: true,
        })),
        normalizer: null,
        pre_tokenizer: { type: this.preTokenizer },
        post_processor: null,
        decoder: null,
        model: {
          type: "WordLevel",
          vocab: Object.fromEntries(this.vocab.map((word, id) => [word, id])),
          unk_token: this.vocab[this.unkId],
        },
      },
      null,
      2,
    );
  }

  /** The token ids of `text` (Tokenizer.encode). */
  encode(text: string): number[] {
    return this.encodeWithOffsets(text).ids;
  }

  encodeWithOffsets(text: string): { ids: number[]; offsets: [number, number][] } {
    return encodeAroundSpecials(
      text,
      this.specialPattern,
      (t) => this.ids.get(t)!,
      (span, start, ids, offsets) => {
        for (const m of span.matchAll(PRE_TOKENIZERS[this.preTokenizer])) {
          ids.push(this.ids.get(m[0]) ?? this.unkId);
          offsets.push([start + m.index, start + m.index + m[0].length]);
        }
      },
    );
  }

  /** Words joined by single spaces; with the Whitespace pre-tokenizer, punctuation attaches to the
   *  word before it ("Paris , France ." -> "Paris, France."). */
  decode(ids: number[]): string {
    let out = "";
    ids.forEach((id, i) => {
      const word = this.tokenString(id);
      const glued = this.preTokenizer === "Whitespace" && PUNCTUATION_TOKEN.test(word);
      out += i === 0 || glued ? word : " " + word;
    });
    return out;
  }

  tokenString(id: number): string {
    return this.vocab[id] ?? missingToken(id);
  }

  idOf(token: string): number | undefined {
    return this.ids.get(token);
  }

  /** Only EOS: unk stands for a word of the text. */
  isSpecial(id: number): boolean {
    return id === this.eosId;
  }
}

// ---------------------------------------------------------------------------------------------
// Any other Hugging Face BPE tokenizer.json, through the @huggingface/tokenizers library

/** A text after normalization, one entry per code point, each with the [start, end) range of the
 *  original text (UTF-16) it came from. Mirrors the alignments of the Rust `tokenizers` library, so
 *  offsets agree with its `Encoding.offsets`. */
interface Aligned {
  chars: string[];
  starts: number[];
  ends: number[];
}

/** One step of normalization; `atTextStart` says the span begins the whole text (Metaspace "first"). */
type AlignedStep = (a: Aligned, atTextStart: boolean) => Aligned;

function alignedOf(text: string, offset: number): Aligned {
  const a: Aligned = { chars: [], starts: [], ends: [] };
  for (let i = 0; i < text.length;) {
    const c = String.fromCodePoint(text.codePointAt(i)!);
    a.chars.push(c);
    a.starts.push(offset + i);
    a.ends.push(offset + i + c.length);
    i += c.length;
  }
  return a;
}

/** `a` with `text` put in front, every new character aligned with the first one (as the Rust library's
 *  NormalizedString::prepend); an empty text stays empty. */
function prependAligned(a: Aligned, text: string): Aligned {
  if (a.chars.length === 0) return a;
  const added = [...text];
  return {
    chars: [...added, ...a.chars],
    starts: [...added.map(() => a.starts[0]), ...a.starts],
    ends: [...added.map(() => a.ends[0]), ...a.ends],
  };
}

/** Replaces every occurrence of `from` by `to`; the new characters span the replaced ones. */
function replaceAligned(a: Aligned, from: string, to: string): Aligned {
  const pattern = [...from];
  const out: Aligned = { chars: [], starts: [], ends: [] };
  for (let i = 0; i < a.chars.length;) {
    if (pattern.every((c, k) => a.chars[i + k] === c)) {
      const [start, end] = [a.starts[i], a.ends[i + pattern.length - 1]];
      for (const c of to) {
        out.chars.push(c);
        out.starts.push(start);
        out.ends.push(end);
      }
      i += pattern.length;
    } else {
      out.chars.push(a.chars[i]);
      out.starts.push(a.starts[i]);
      out.ends.push(a.ends[i]);
      i++;
    }
  }
  return out;
}

/** Characters that compose with the one before them (combining marks, Hangul vowel and final jamo):
 *  a Unicode normalization form acts on a starter and the run of these after it. */
const COMBINING = /[\p{M}\u1160-\u11ff\ud7b0-\ud7ff]/u;

/** A per-character map (Unicode normalization, lowercasing) applied to runs that start at a character
 *  outside `joins`: output character j of a run takes the range of its input character min(j, n - 1),
 *  as the Rust library aligns "e\u0301" -> "é" with the "e". */
function mapRunsAligned(a: Aligned, f: (s: string) => string, joins: RegExp | null): Aligned {
  const out: Aligned = { chars: [], starts: [], ends: [] };
  for (let i = 0; i < a.chars.length;) {
    let j = i + 1;
    while (joins && j < a.chars.length && joins.test(a.chars[j])) j++;
    const mapped = [...f(a.chars.slice(i, j).join(""))];
    mapped.forEach((c, k) => {
      const from = Math.min(i + k, j - 1);
      out.chars.push(c);
      out.starts.push(a.starts[from]);
      out.ends.push(a.ends[from]);
    });
    i = j;
  }
  return out;
}

function stripAligned(a: Aligned, left: boolean, right: boolean): Aligned {
  let [i, j] = [0, a.chars.length];
  while (left && i < j && /\s/u.test(a.chars[i])) i++;
  while (right && j > i && /\s/u.test(a.chars[j - 1])) j--;
  return { chars: a.chars.slice(i, j), starts: a.starts.slice(i, j), ends: a.ends.slice(i, j) };
}

/** The aligned steps of a tokenizer.json "normalizer" (null: none). */
function normalizerSteps(n: unknown, where: string): AlignedStep[] {
  if (n === null || n === undefined) return [];
  if (!isObject(n)) throw new Error(`${where} must be an object or null`);
  switch (n.type) {
    case "Sequence":
      if (!Array.isArray(n.normalizers)) throw new Error(`${where}.normalizers must be an array`);
      return n.normalizers.flatMap((m, i) => normalizerSteps(m, `${where}.normalizers[${i}]`));
    case "Prepend":
      if (typeof n.prepend !== "string") throw new Error(`${where}.prepend must be a string`);
      return [(a) => prependAligned(a, n.prepend as string)];
    case "Replace": {
      const pattern = n.pattern;
      if (!isObject(pattern) || typeof pattern.String !== "string" || pattern.String === "") {
        throw new Error(
          `${where}: only a Replace of a {"String": ...} pattern is supported, found ${
            JSON.stringify(pattern)
          }`,
        );
      }
      if (typeof n.content !== "string") throw new Error(`${where}.content must be a string`);
      return [(a) => replaceAligned(a, pattern.String as string, n.content as string)];
    }
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD": {
      const form = n.type;
      return [(a) => mapRunsAligned(a, (s) => s.normalize(form), COMBINING)];
    }
    case "Lowercase":
      return [(a) => mapRunsAligned(a, (s) => s.toLowerCase(), null)];
    case "Strip":
      return [(a) => stripAligned(a, n.strip_left === true, n.strip_right === true)];
    default:
      throw new Error(
        `${where}: normalizer type ${
          JSON.stringify(n.type)
        } is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip)`,
      );
  }
}

interface PreTokenizerInfo {
  steps: AlignedStep[];
  /** tokens are written byte-level (GPT-2's byte -> char table) */
  byteLevel: boolean;
  /** the character written for a space (Metaspace's "▁"), or null */
  mark: string | null;
  /** a space (mark) is put before the text */
  prepends: boolean;
}

/** What the tokens of a pre-tokenizer look like: the aligned steps that change the text (Metaspace's
 *  spaces, a prefix space) and whether tokens are written byte-level (GPT-2's byte -> char table).
 *  Splitting pre-tokenizers change nothing; those that drop whitespace (Whitespace, Bert) are handled
 *  when tokens are aligned. */
function preTokenizerSteps(
  p: unknown,
  where: string,
  nested: boolean,
  /** strings the normalizer replaces, so that no pre-tokenizer sees them */
  replaced: Set<string>,
): PreTokenizerInfo {
  const none = { steps: [], byteLevel: false, mark: null, prepends: false };
  if (p === null || p === undefined) return none;
  if (!isObject(p)) throw new Error(`${where} must be an object or null`);
  switch (p.type) {
    case "Sequence": {
      if (!Array.isArray(p.pretokenizers)) throw new Error(`${where}.pretokenizers must be an array`);
      const parts = p.pretokenizers.map((q, i) =>
        preTokenizerSteps(q, `${where}.pretokenizers[${i}]`, true, replaced)
      );
      return {
        steps: parts.flatMap((q) => q.steps),
        byteLevel: parts.some((q) => q.byteLevel),
        mark: parts.find((q) => q.mark !== null)?.mark ?? null,
        prepends: parts.some((q) => q.prepends),
      };
    }
    case "ByteLevel":
      if (p.add_prefix_space !== true) return { steps: [], byteLevel: true, mark: null, prepends: false };
      // The library adds the space to each piece it is given: one per span only when nothing splits first.
      if (nested) {
        throw new Error(`${where}: a ByteLevel with add_prefix_space inside a Sequence is not supported`);
      }
      return {
        steps: [(a) => (a.chars[0] === " " ? a : prependAligned(a, " "))],
        byteLevel: true,
        mark: null,
        prepends: true,
      };
    case "Metaspace": {
      // The Rust library also splits before each "▁" when `split` (its default); the JavaScript one
      // does not, which changes the tokens of repeated spaces.
      if (p.split !== false) throw new Error(`${where}: a Metaspace with split (not false) is not supported`);
      const replacement = typeof p.replacement === "string" ? p.replacement : "\u2581";
      const scheme = p.prepend_scheme ?? "always";
      if (scheme !== "always" && scheme !== "first" && scheme !== "never") {
        throw new Error(`${where}: unknown prepend_scheme ${JSON.stringify(scheme)}`);
      }
      return {
        steps: [(a, atTextStart) => {
          const replaced = replaceAligned(a, " ", replacement);
          const prepend = replaced.chars[0] !== replacement &&
            (scheme === "always" || (scheme === "first" && atTextStart));
          return prepend ? prependAligned(replaced, replacement) : replaced;
        }],
        byteLevel: false,
        mark: replacement,
        prepends: scheme !== "never",
      };
    }
    case "Split": {
      // The library splits MergedWithPrevious/MergedWithNext/Contiguous as Isolated: harmless only when
      // the pattern cannot match (Gemma splits on " " after its normalizer replaced every " ").
      const behavior = p.behavior;
      const pattern = isObject(p.pattern) ? p.pattern.String : undefined;
      if (
        behavior !== "Isolated" && behavior !== "Removed" &&
        !(typeof pattern === "string" && replaced.has(pattern))
      ) {
        throw new Error(`${where}: a Split with behavior ${JSON.stringify(behavior)} is not supported`);
      }
      return none;
    }
    case "Digits":
    case "Punctuation":
    case "Whitespace":
    case "WhitespaceSplit":
    case "BertPreTokenizer":
      return none;
    default:
      throw new Error(`${where}: pre-tokenizer type ${JSON.stringify(p.type)} is not supported`);
  }
}

/** The special tokens a tokenizer.json post-processor puts around a single text: [before, after]. */
function templateIds(p: unknown, where: string): [number[], number[]] {
  if (p === null || p === undefined) return [[], []];
  if (!isObject(p)) throw new Error(`${where} must be an object or null`);
  if (p.type === "ByteLevel") return [[], []]; // only trims offsets, which Locus keeps whole
  if (p.type === "Sequence") {
    if (!Array.isArray(p.processors)) throw new Error(`${where}.processors must be an array`);
    const parts = p.processors.map((q, i) => templateIds(q, `${where}.processors[${i}]`));
    return [parts.flatMap((q) => q[0]), parts.flatMap((q) => q[1])];
  }
  if (p.type !== "TemplateProcessing") {
    throw new Error(
      `${where}: post-processor type ${
        JSON.stringify(p.type)
      } is not supported (supported: TemplateProcessing, ByteLevel, Sequence)`,
    );
  }
  if (!Array.isArray(p.single) || !isObject(p.special_tokens)) {
    throw new Error(`${where}: TemplateProcessing needs "single" and "special_tokens"`);
  }
  const specials = p.special_tokens;
  const out: [number[], number[]] = [[], []];
  let side = 0;
  p.single.forEach((item, i) => {
    if (isObject(item) && isObject(item.Sequence)) {
      side = 1;
    } else if (isObject(item) && isObject(item.SpecialToken)) {
      const name = item.SpecialToken.id;
      const entry = typeof name === "string" ? specials[name] : undefined;
      if (
        !isObject(entry) || !Array.isArray(entry.ids) || entry.ids.some((id) => !Number.isSafeInteger(id))
      ) {
        throw new Error(
          `${where}.single[${i}]: special token ${JSON.stringify(name)} has no ids in special_tokens`,
        );
      }
      out[side].push(...(entry.ids as number[]));
    } else {
      throw new Error(`${where}.single[${i}]: expected {"SpecialToken": ...} or {"Sequence": ...}`);
    }
  });
  return out;
}

/** UTF-8 bytes of a string given as code points, each byte with its code point's original range. */
function alignedBytes(a: Aligned): { bytes: Uint8Array; starts: number[]; ends: number[] } {
  const starts: number[] = [], ends: number[] = [];
  a.chars.forEach((c, i) => {
    // Lone surrogates are written as U+FFFD (3 bytes), as TextEncoder does.
    for (let k = utf8Length(c.codePointAt(0)!); k > 0; k--) {
      starts.push(a.starts[i]);
      ends.push(a.ends[i]);
    }
  });
  return { bytes: utf8Encoder.encode(a.chars.join("")), starts, ends };
}

/** The smallest start and largest end over bytes [from, to). */
function byteRange(starts: number[], ends: number[], from: number, to: number): [number, number] {
  let [start, end] = [starts[from], ends[from]];
  for (let k = from + 1; k < to; k++) {
    if (starts[k] < start) start = starts[k];
    if (ends[k] > end) end = ends[k];
  }
  return [start, end];
}

const BYTE_FALLBACK = /^<0x([0-9A-F]{2})>$/;

/** A BPE tokenizer.json of any of the families Locus runs (SentencePiece-style with byte fallback: Llama 2,
 *  Mistral, Gemma; byte-level with a regex pre-tokenizer: Llama 3, Qwen2/3, GPT-NeoX). Token ids come from
 *  the `@huggingface/tokenizers` library (the JavaScript port of the Rust `tokenizers` that
 *  transformers' fast tokenizers run), which follows tokenizer.json as the Rust library reads it.
 *  Where transformers' AutoTokenizer rebuilds a Llama-type tokenizer from its own settings instead, the
 *  file wins here: transformers 5 rebuilds a Llama 2-style file (Prepend "▁" + Replace normalizer) with
 *  a Metaspace pre-tokenizer, so a text starting with a space differs (" Hello": the file gives "▁",
 *  "▁Hello"; AutoTokenizer "▁Hello"), as does the BOS when tokenizer_config.json's add_bos_token
 *  contradicts the file's post-processor. Texts that start with a word encode the same either way.
 *
 *  The library gives no character offsets, so they are derived: the text is cut around added tokens,
 *  each span normalized with every character keeping its original range (the Rust library's
 *  alignments, see Aligned), and the library's tokens are matched, as bytes, against the normalized
 *  span's bytes. A token holding any byte of a character gets the character's whole range, so tokens
 *  sharing a character (the byte-fallback pieces of an emoji) share its range, as in the Rust library.
 *  Tokens that cannot be matched raise an error rather than give wrong offsets. One difference from the
 *  Rust library: a ByteLevel post-processor's trim_offsets is ignored, so a token's range keeps its
 *  leading space (" Paris" covers the space), as BpeTokenizer's do. */
export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly eosId: number | null;
  readonly bosId: number | null;
  private readonly library: HfLibrary;
  /** id -> token string as in the vocabulary ("▁Paris", "ĠParis", "<0x0A>", "<s>") */
  private readonly tokenOfId: string[] = [];
  /** added tokens matched in the raw text, and those matched after normalization */
  private readonly rawAdded: RegExp | null;
  private readonly normalizedAdded: RegExp | null;
  private readonly addedIds = new Map<string, number>();
  private readonly specialIds = new Set<number>();
  private readonly steps: AlignedStep[];
  private readonly byteLevel: boolean;
  private readonly byteFallback: boolean;
  private readonly unkToken: string | null;
  /** the character SentencePiece-style vocabularies write for a space ("▁"), or null */
  private readonly spaceMark: string | null;
  /** the normalizer or pre-tokenizer puts a space (mark) before the text, which decode takes off */
  private readonly prependsSpace: boolean;
  private readonly template: [number[], number[]];
  /** token -> surface (see surface()), for the tokens met so far */
  private readonly surfaces = new Map<string, Uint8Array>();

  private constructor(root: Record<string, unknown>, model: Record<string, unknown>, source: string) {
    // Checked here first, so that bad files get errors naming the field rather than the library's.
    const vocab = readVocabObject(model.vocab, `${source}: model.vocab`);
    for (const [token, id] of vocab) this.tokenOfId[id] = token;
    if (!Array.isArray(model.merges)) throw new Error(`${source}: model.merges must be an array`);
    const added = readAddedTokens(root.added_tokens, source);
    try {
      // The library wants every component key present; tokenizer.json may leave absent ones out.
      const parts = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null };
      this.library = new HfLibrary({ ...parts, ...root }, {});
    } catch (e) {
      throw new Error(`${source}: ${(e as Error).message}`);
    }
    const rawAdded: string[] = [], normalizedAdded: string[] = [];
    for (const [i, t] of added.entries()) {
      const flags = (root.added_tokens as Record<string, unknown>[])[i];
      if (flags.lstrip === true || flags.rstrip === true || flags.single_word === true) {
        throw new Error(
          `${source}: added_tokens[${i}] ${
            JSON.stringify(t.content)
          }: lstrip, rstrip and single_word are not supported`,
        );
      }
      this.tokenOfId[t.id] = t.content;
      this.addedIds.set(t.content, t.id);
      if (t.special) this.specialIds.add(t.id);
      if (flags.normalized === true && this.library.normalizer) {
        // Matched in the normalized text, as normalized ("foo" -> "▁foo" after Llama 2's Prepend).
        const normalized = this.library.normalizer(t.content) as string;
        this.addedIds.set(normalized, t.id);
        normalizedAdded.push(normalized);
      } else rawAdded.push(t.content);
    }
    this.rawAdded = specialTokenPattern(rawAdded);
    this.normalizedAdded = specialTokenPattern(normalizedAdded);
    this.vocabSize = this.tokenOfId.length;

    for (const key of ["continuing_subword_prefix", "end_of_word_suffix"]) {
      if (typeof model[key] === "string" && model[key] !== "") {
        throw new Error(`${source}: model.${key} is not supported (found ${JSON.stringify(model[key])})`);
      }
    }
    this.byteFallback = model.byte_fallback === true;
    this.unkToken = typeof model.unk_token === "string" ? model.unk_token : null;
    const normalizer = normalizerSteps(root.normalizer, `${source}: normalizer`);
    const replaced = new Set<string>();
    for (const r of findNormalizers(root.normalizer, "Replace")) {
      if (isObject(r.pattern) && typeof r.pattern.String === "string") replaced.add(r.pattern.String);
    }
    const pre = preTokenizerSteps(root.pre_tokenizer, `${source}: pre_tokenizer`, false, replaced);
    this.steps = [...normalizer, ...pre.steps];
    this.byteLevel = pre.byteLevel;
    // SentencePiece-style files write spaces as "▁" in the normalizer (Llama 2, Gemma) or the Metaspace
    // pre-tokenizer (newer Llama/Mistral files); a Prepend of it adds one before the text.
    const replace = findNormalizers(root.normalizer, "Replace").find((r) =>
      isObject(r.pattern) && r.pattern.String === " "
    );
    const fromNormalizer = replace ? replace.content as string : null;
    this.spaceMark = pre.byteLevel ? null : fromNormalizer ?? pre.mark;
    const prepends = findNormalizers(root.normalizer, "Prepend").some((n) => n.prepend === this.spaceMark);
    this.prependsSpace = prepends || pre.prepends;

    this.template = templateIds(root.post_processor, `${source}: post_processor`);
    for (const id of [...this.template[0], ...this.template[1]]) {
      if (this.tokenOfId[id] === undefined) {
        throw new Error(`${source}: post_processor adds token id ${id}, which no token has`);
      }
      this.specialIds.add(id);
    }
    this.bosId = this.template[0].length > 0 ? this.template[0][0] : null;
    const eos = pickEos(added.filter((t) => t.special).map((t) => t.content));
    this.eosId = eos === undefined ? null : this.addedIds.get(eos)!;
  }

  /** From a Hugging Face tokenizer.json (its contents) with a BPE model. */
  static fromTokenizerJson(json: string, source = "tokenizer.json"): HfTokenizer {
    const root = parseJson(json, source);
    if (!isObject(root) || !isObject(root.model)) throw new Error(`${source}: missing the "model" object`);
    if (root.model.type !== "BPE") {
      throw new Error(`${source}: model.type is ${JSON.stringify(root.model.type)}, expected "BPE"`);
    }
    return new HfTokenizer(root, root.model, source);
  }

  /** The token ids of `text` (Tokenizer.encode). */
  encode(text: string): number[] {
    return [...this.template[0], ...this.ids(this.library.tokenize(text)), ...this.template[1]];
  }

  encodeWithOffsets(text: string): { ids: number[]; offsets: [number, number][] } {
    const tokens = this.library.tokenize(text);
    const offsets: [number, number][] = this.template[0].map(() => [0, 0]);
    let next = 0; // the first token of `tokens` not yet aligned
    const fail = (why: string): never => {
      throw new Error(
        `cannot align token ${next} (${JSON.stringify(tokens[next])}) of ${
          JSON.stringify(text)
        } with the text: ${why}`,
      );
    };
    const alignSpan = (a: Aligned) => {
      for (const piece of splitAligned(a, this.normalizedAdded)) {
        if (piece.added) {
          if (tokens[next] !== piece.added) fail(`expected the added token ${JSON.stringify(piece.added)}`);
          offsets.push([piece.a.starts[0], piece.a.ends.at(-1)!]);
          next++;
          continue;
        }
        const { bytes, starts, ends } = alignedBytes(piece.a);
        for (let at = 0; at < bytes.length;) {
          const length = next < tokens.length ? this.matchAt(tokens[next], bytes, at) : -1;
          if (length > 0) {
            offsets.push(byteRange(starts, ends, at, at + length));
            at += length;
            next++;
          } else if (tokens[next] === this.unkToken) {
            // An unknown stretch: up to where the token after it matches (or the span's end).
            let end = at + 1;
            while (
              end < bytes.length &&
              !(next + 1 < tokens.length && this.matchAt(tokens[next + 1], bytes, end) > 0)
            ) end++;
            offsets.push(byteRange(starts, ends, at, end));
            at = end;
            next++;
          } else {
            // Whitespace a pre-tokenizer dropped (Whitespace, WhitespaceSplit, Bert).
            const skip = this.whitespaceAt(bytes, at);
            if (skip === 0) fail(`no token for byte ${at} of the normalized span`);
            at += skip;
          }
        }
      }
    };
    for (const span of splitOnSpecialTokens(text, this.rawAdded)) {
      if (span.special) {
        if (tokens[next] !== text.slice(span.start, span.end)) fail("expected an added token");
        offsets.push([span.start, span.end]);
        next++;
      } else {
        const a = this.steps.reduce(
          (x, step) => step(x, span.start === 0),
          alignedOf(text.slice(span.start, span.end), span.start),
        );
        alignSpan(a);
      }
    }
    if (next !== tokens.length) fail("tokens left over");
    for (const _ of this.template[1]) offsets.push([0, 0]);
    return { ids: [...this.template[0], ...this.ids(tokens), ...this.template[1]], offsets };
  }

  /** How many bytes of `bytes` from `at` the token stands for, or -1 if it does not match there. */
  private matchAt(token: string, bytes: Uint8Array, at: number): number {
    const surface = this.surface(token);
    const matches = (s: Uint8Array) => s.length > 0 && s.every((b, k) => bytes[at + k] === b);
    if (matches(surface)) return surface.length;
    if (this.byteFallback && BYTE_FALLBACK.test(token)) {
      const literal = utf8Encoder.encode(token);
      if (matches(literal)) return literal.length;
    }
    return -1;
  }

  /** The byte length of the whitespace character (or space mark) at `at`, 0 if there is none. */
  private whitespaceAt(bytes: Uint8Array, at: number): number {
    let end = at + 1;
    while (end < bytes.length && (bytes[end] & 0xc0) === 0x80) end++; // continuation bytes
    const c = utf8Decoder.decode(bytes.subarray(at, end));
    return /^\s$/u.test(c) || c === this.spaceMark ? end - at : 0;
  }

  /** The bytes a token stands for in the normalized text: byte-level characters -> bytes, a byte-fallback
   *  token "<0xE6>" -> that byte, anything else -> its UTF-8. */
  private surface(token: string): Uint8Array {
    let s = this.surfaces.get(token);
    if (s === undefined) {
      s = this.computeSurface(token);
      // Bounded, as BpeTokenizer's cache: at most the vocabulary, but a long random text need not fill it.
      if (this.surfaces.size >= BPE_CACHE_LIMIT) this.surfaces.clear();
      this.surfaces.set(token, s);
    }
    return s;
  }

  /** The bytes a token stands for (byte-level, byte-fallback or plain text). */
  private computeSurface(token: string): Uint8Array {
    if (this.addedIds.has(token)) return utf8Encoder.encode(token);
    if (this.byteLevel) {
      const bytes = Array.from(token, (c) => CHAR_TO_BYTE.get(c));
      if (bytes.some((b) => b === undefined)) return utf8Encoder.encode(token);
      return Uint8Array.from(bytes as number[]);
    }
    const byte = this.byteFallback ? BYTE_FALLBACK.exec(token) : null;
    return byte ? Uint8Array.of(parseInt(byte[1], 16)) : utf8Encoder.encode(token);
  }

  /** The ids of the library's tokens. */
  private ids(tokens: string[]): number[] {
    return tokens.map((t) => {
      const id = this.addedIds.get(t) ?? this.library.token_to_id(t);
      if (id === undefined) throw new Error(`the tokenizer produced ${JSON.stringify(t)}, which has no id`);
      return id;
    });
  }

  /** The bytes of the text a token stands for: byte-level and byte-fallback tokens are bytes; other
   *  tokens (added ones too, as the Rust library decodes) have their space marks read as spaces. */
  private textBytes(id: number): Uint8Array {
    const token = this.tokenOfId[id];
    if (token === undefined) return utf8Encoder.encode(missingToken(id));
    const added = this.addedIds.has(token);
    if (!added && (this.byteLevel || (this.byteFallback && BYTE_FALLBACK.test(token)))) {
      return this.surface(token);
    }
    return utf8Encoder.encode(this.spaceMark === null ? token : token.replaceAll(this.spaceMark, " "));
  }

  /** Leaves out the template's tokens where it puts them (a BOS first, an EOS last); the same token
   *  elsewhere came from the text and is kept. */
  decode(ids: number[]): string {
    const [before, after] = this.template;
    const starts = before.every((id, i) => ids[i] === id);
    const ends = after.every((id, i) => ids[ids.length - after.length + i] === id);
    const body = ids.slice(starts ? before.length : 0, ends ? ids.length - after.length : ids.length);
    const text = utf8Decoder.decode(concatBytes(body.map((id) => this.textBytes(id))));
    return this.prependsSpace && text.startsWith(" ") ? text.slice(1) : text;
  }

  tokenString(id: number): string {
    return utf8Decoder.decode(this.textBytes(id));
  }

  idOf(token: string): number | undefined {
    return this.addedIds.get(token) ?? this.library.token_to_id(token);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }
}

/** The normalizers of a type, inside Sequences too. */
function findNormalizers(n: unknown, type: string): Record<string, unknown>[] {
  if (!isObject(n)) return [];
  if (n.type === "Sequence" && Array.isArray(n.normalizers)) {
    return n.normalizers.flatMap((m) => findNormalizers(m, type));
  }
  return n.type === type ? [n] : [];
}

/** Cuts an aligned text around the added tokens `pattern` matches (normalized added tokens). */
function splitAligned(a: Aligned, pattern: RegExp | null): { a: Aligned; added: string | null }[] {
  if (pattern === null) return [{ a, added: null }];
  const text = a.chars.join("");
  // code unit index -> code point index
  const cp: number[] = [];
  a.chars.forEach((c, i) => {
    for (let k = 0; k < c.length; k++) cp.push(i);
  });
  cp.push(a.chars.length);
  const slice = (from: number, to: number): Aligned => ({
    chars: a.chars.slice(cp[from], cp[to]),
    starts: a.starts.slice(cp[from], cp[to]),
    ends: a.ends.slice(cp[from], cp[to]),
  });
  return splitOnSpecialTokens(text, pattern).map((s) => ({
    a: slice(s.start, s.end),
    added: s.special ? text.slice(s.start, s.end) : null,
  }));
}

// ---------------------------------------------------------------------------------------------
// Loading and subject lookup

/** Whether a BPE tokenizer.json is GPT-2's kind, which BpeTokenizer encodes: no normalizer, GPT-2's
 *  ByteLevel pre-tokenizer, no template adding tokens, no byte fallback. BpeTokenizer stays for these: on
 *  GPT-2's vocabulary it encodes 4000 CounterFact prompts 2-4x faster than the library (27-69 ms
 *  against 96-317 ms, warm, on a shared 2-core machine) and 3-5x faster with offsets (66-104 ms against
 *  HfTokenizer's 264-369 ms). */
function isGpt2Kind(root: Record<string, unknown>, model: Record<string, unknown>): boolean {
  const pre = root.pre_tokenizer, post = root.post_processor;
  return (root.normalizer === null || root.normalizer === undefined) &&
    isObject(pre) && pre.type === "ByteLevel" && pre.add_prefix_space !== true && pre.use_regex !== false &&
    (post === null || post === undefined || (isObject(post) && post.type === "ByteLevel")) &&
    model.byte_fallback !== true && model.ignore_merges !== true &&
    !model.continuing_subword_prefix && !model.end_of_word_suffix;
}

/** A tokenizer.json, chosen by its model.type (and for BPE, whether it is GPT-2's kind). */
export function tokenizerFromJson(json: string, source = "tokenizer.json"): Tokenizer {
  const root = parseJson(json, source);
  const type = isObject(root) && isObject(root.model) ? root.model.type : undefined;
  if (type === "BPE") {
    const { model } = root as { model: Record<string, unknown> };
    return isGpt2Kind(root as Record<string, unknown>, model)
      ? BpeTokenizer.fromTokenizerJson(json, source)
      : HfTokenizer.fromTokenizerJson(json, source);
  }
  if (type === "WordLevel") return WordLevelTokenizer.fromTokenizerJson(json, source);
  throw new Error(`${source}: model.type is ${JSON.stringify(type)}; supported are "BPE" and "WordLevel"`);
}

/** The file's text (null when it does not exist), read through io(). Invalid UTF-8 is an error naming
 *  the file: a lossy decode would turn a damaged token into U+FFFD and silently give it another string. */
async function readTextIfExists(path: string): Promise<string | null> {
  const file = await io().open(path);
  if (!file) return null;
  let bytes: Uint8Array;
  try {
    bytes = await file.read(0, file.size);
  } finally {
    file.close();
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`${path}: not valid UTF-8; tokenizer files must be UTF-8`);
  }
}

/** Loads tokenizer.json, or vocab.json + merges.txt, from a model folder (clear error naming the folder if neither). */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const tokenizerPath = join(dir, "tokenizer.json");
  const tokenizerJson = await readTextIfExists(tokenizerPath);
  if (tokenizerJson !== null) return tokenizerFromJson(tokenizerJson, tokenizerPath);
  const vocabPath = join(dir, "vocab.json"), mergesPath = join(dir, "merges.txt");
  const [vocab, merges] = await Promise.all([readTextIfExists(vocabPath), readTextIfExists(mergesPath)]);
  if (vocab !== null && merges !== null) {
    return BpeTokenizer.fromFiles(vocab, merges, { vocab: vocabPath, merges: mergesPath });
  }
  const found = vocab !== null
    ? " (found vocab.json only)"
    : merges !== null
    ? " (found merges.txt only)"
    : "";
  throw new Error(`${dir}: no tokenizer, expected tokenizer.json or vocab.json + merges.txt${found}`);
}

/** Token index range [start, end) of `subject` inside `prompt` (first occurrence, or the `occurrence`-th
 *  counting from 0), found through token character offsets; throws naming the prompt and subject if the
 *  subject is absent. Every token holding part of the subject counts, so subject "Eiffel Tower" in
 *  "The Eiffel Tower is" gives GPT-2's tokens of " Eiffel Tower" (" E", "iff", "el", " Tower"), and
 *  Llama 2's "▁E", "iff", "el", "▁Tower" (indices 2..6: its BOS is token 0). Tokens the post-processor
 *  adds (BOS) never count, even for a subject at the start of the prompt. */
export function subjectTokenRange(
  tok: Tokenizer,
  prompt: string,
  subject: string,
  occurrence = 0,
): [number, number] {
  if (subject === "") {
    throw new Error(`subjectTokenRange: empty subject for prompt ${JSON.stringify(prompt)}`);
  }
  let at = -1;
  for (let k = 0; k <= occurrence; k++) {
    at = prompt.indexOf(subject, at + 1);
    if (at < 0) {
      const which = occurrence > 0 ? ` ${occurrence + 1} times` : "";
      throw new Error(
        `subject ${JSON.stringify(subject)} does not occur${which} in prompt ${JSON.stringify(prompt)}`,
      );
    }
  }
  const [subjectStart, subjectEnd] = [at, at + subject.length];
  const { ids, offsets } = tok.encodeWithOffsets(prompt);
  let first = -1, last = -1;
  offsets.forEach(([start, end], i) => {
    // A special token with an empty range came from no text: the post-processor added it (BOS).
    if (start === end && tok.isSpecial(ids[i])) return;
    // Other empty ranges hold the leading bytes of the multi-byte character that starts there.
    const inside = start === end
      ? start >= subjectStart && start < subjectEnd
      : start < subjectEnd && end > subjectStart;
    if (inside) {
      if (first < 0) first = i;
      last = i;
    }
  });
  if (first < 0) {
    throw new Error(`subject ${JSON.stringify(subject)} covers no token of prompt ${JSON.stringify(prompt)}`);
  }
  // Byte-level BPE may end the token before on the first bytes of the subject's first character
  // (" \xF0\x9F" of " 🤗"): its range stops at the subject, yet it holds part of it. Then decoding
  // everything before `first` gives the prompt up to the subject plus one incomplete character.
  if (
    first > 0 && offsets[first - 1][1] === subjectStart &&
    tok.decode(ids.slice(0, first)) === prompt.slice(0, subjectStart) + "\uFFFD"
  ) first--;
  return [first, last + 1];
}

/** The ids of `target` as a model reads it after `prompt`: the ids of prompt + " " + target past those of
 *  prompt. Every experiment scoring or editing a target must use this rather than encode(" " + target):
 *  a tokenizer that puts a BOS before every text (Llama, Gemma) would put one before the target too,
 *  and SentencePiece-style tokenizers put a space mark before every text (Llama 2 reads " Paris" as
 *  "▁▁Paris": a lone "▁" token, then "▁Paris"), so encode(" " + target) is not what follows a prompt.
 *  Special tokens a template appends after every text (an EOS) are left out of both sides. Throws,
 *  naming prompt and target, if the prompt's ids are not a prefix of the joined text's (the tokenizer
 *  merged across the boundary, e.g. a prompt ending in whitespace), if nothing is left, or, with
 *  `refuseUnknown`, if a word of the target is outside a word-level vocabulary (its unk token). For GPT-2
 *  and word-level tokenizers this equals encode(" " + target) for a prompt that ends in a word. */
export function targetIds(
  tok: Tokenizer,
  prompt: string,
  target: string,
  o: { refuseUnknown?: boolean } = {},
): number[] {
  // A blank target would come back as the joining space's token.
  if (target.trim() === "") throw new Error(`target ${JSON.stringify(target)} has no tokens`);
  const context = tok.encode(prompt), full = tok.encode(prompt + " " + target);
  let tail = 0;
  while (
    tail < context.length && tail < full.length && tok.isSpecial(context[context.length - 1 - tail]) &&
    context[context.length - 1 - tail] === full[full.length - 1 - tail]
  ) tail++;
  const head = context.slice(0, context.length - tail);
  if (head.some((id, i) => full[i] !== id)) {
    throw new Error(
      `target ${JSON.stringify(target)} after prompt ${
        JSON.stringify(prompt)
      }: the tokens of prompt + " " + target do not start with the prompt's tokens (the tokenizer joins text across the boundary; end the prompt with a word, not whitespace)`,
    );
  }
  const ids = full.slice(head.length, full.length - tail);
  if (ids.length === 0) throw new Error(`target ${JSON.stringify(target)} has no tokens`);
  if (o.refuseUnknown && tok instanceof WordLevelTokenizer && ids.includes(tok.unkId)) {
    const word = target.split(/\s+/).find((w) => w !== "" && tok.encode(w).includes(tok.unkId));
    throw new Error(
      `target ${JSON.stringify(target)} has the word ${
        JSON.stringify(word ?? target)
      } outside the tokenizer's vocabulary`,
    );
  }
  return ids;
}
