// Tokenizers: GPT-2's byte-level BPE and a whitespace word-level tokenizer for Locus's own small models.
//
// Both report, for every token, the [start, end) range of `text` (UTF-16 indices, so text.slice works)
// it came from. Fact-editing experiments need this to find "which tokens are the subject" in a prompt
// (causal tracing corrupts them, ROME edits at the last one): see subjectTokenRange.
//
// Byte-level BPE in three steps (Radford et al. 2019, GPT-2's encoder.py):
//   1. split the text around special tokens such as <|endoftext|>, which are looked up whole;
//   2. pre-tokenize each remaining span with GPT-2's regex into "pieces" (" world", "'s", "  ");
//   3. write each piece's UTF-8 bytes as printable characters (byte -> char table below) and merge
//      adjacent symbols in order of merge rank until no ranked pair is left; each symbol is a token.

import { join } from "node:path";

export interface Tokenizer {
  readonly vocabSize: number;
  /** <|endoftext|> for GPT-2; null when the vocabulary has no end-of-sequence token. */
  readonly eosId: number | null;
  encode(text: string): number[];
  decode(ids: number[]): string;
  /** The decoded text of one token (e.g. " Paris"). */
  tokenString(id: number): string;
  /** Raw vocabulary lookup (GPT-2 writes a leading space as "Ġ": idOf("ĠParis")). */
  idOf(token: string): number | undefined;
  /** ids plus, for each token, the [start, end) character range in `text` it came from. */
  encodeWithOffsets(text: string): { ids: number[]; offsets: [number, number][] };
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
  for (const name of ["<|endoftext|>", "</s>", "<eos>", "<|eos|>"]) {
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
const utf8Decoder = new TextDecoder(); // not fatal: a partial multi-byte character decodes as U+FFFD

/** UTF-8 length of a code point (a lone surrogate is written as U+FFFD: 3 bytes, as TextEncoder does). */
function utf8Length(codePoint: number): number {
  return codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4;
}

/** Pieces seen often (" the", " of") skip the merge loop; bounded so a long random text cannot grow it forever. */
const BPE_CACHE_LIMIT = 100_000;

export class BpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
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
    return BpeTokenizer.build(vocab, merges, specials, eos ?? null, names);
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
    const eos = pickEos(added.filter((t) => t.special).map((t) => t.content));
    return BpeTokenizer.build(vocab, merges, specials, eos === undefined ? null : specials.get(eos)!, {
      vocab: `${source}: model.vocab`,
      merges: `${source}: model.merges`,
    });
  }

  /** Checks that every byte has a token and every merge joins known tokens into a known token. */
  private static build(
    vocab: Map<string, number>,
    merges: [string, string][],
    specials: Map<string, number>,
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
    return new BpeTokenizer(vocab, mergeRanks, specials, eosId);
  }

  encode(text: string): number[] {
    return this.encodeWithOffsets(text).ids;
  }

  encodeWithOffsets(text: string): { ids: number[]; offsets: [number, number][] } {
    const ids: number[] = [];
    const offsets: [number, number][] = [];
    for (const span of splitOnSpecialTokens(text, this.specialPattern)) {
      if (span.special) {
        ids.push(this.specials.get(text.slice(span.start, span.end))!);
        offsets.push([span.start, span.end]);
        continue;
      }
      for (const m of text.slice(span.start, span.end).matchAll(GPT2_SPLIT)) {
        this.encodePiece(m[0], span.start + m.index, ids, offsets);
      }
    }
    return { ids, offsets };
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
    const parts = ids.map((id) => this.bytesOf(id));
    const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    return utf8Decoder.decode(bytes);
  }

  tokenString(id: number): string {
    return utf8Decoder.decode(this.bytesOf(id));
  }

  idOf(token: string): number | undefined {
    return this.vocab.get(token) ?? this.specials.get(token);
  }

  private bytesOf(id: number): Uint8Array {
    const bytes = this.tokenBytes[id];
    if (bytes === undefined) {
      throw new Error(`token id ${id} is not in the vocabulary (size ${this.vocabSize})`);
    }
    return bytes;
  }
}

// ---------------------------------------------------------------------------------------------
// Word-level tokenizer: one id per word or punctuation run, unknown words -> unk

/** \w as Oniguruma (the regex engine of HF tokenizers) reads it on Unicode text: letters and other
 *  alphabetic characters, marks, decimal digits, connector punctuation, and the Latin-1 digits ²³¹¼½¾.
 *  JavaScript's own \w is ASCII only. */
const WORD_CHAR = String.raw`\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u00b2\u00b3\u00b9\u00bc-\u00be`;
const PRE_TOKENIZERS = {
  /** HF "Whitespace": \w+|[^\w\s]+ (words, and runs of punctuation as their own tokens). */
  Whitespace: new RegExp(String.raw`[${WORD_CHAR}]+|[^${WORD_CHAR}\p{White_Space}]+`, "gu"),
  /** HF "WhitespaceSplit": anything between whitespace. */
  WhitespaceSplit: /[^\p{White_Space}]+/gu,
};
type PreTokenizerName = keyof typeof PRE_TOKENIZERS;
const PUNCTUATION_TOKEN = new RegExp(String.raw`^[^${WORD_CHAR}\p{White_Space}]+$`, "u");

export class WordLevelTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly eosId: number | null;
  readonly unkId: number;
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

  encode(text: string): number[] {
    return this.encodeWithOffsets(text).ids;
  }

  encodeWithOffsets(text: string): { ids: number[]; offsets: [number, number][] } {
    const ids: number[] = [];
    const offsets: [number, number][] = [];
    for (const span of splitOnSpecialTokens(text, this.specialPattern)) {
      const spanText = text.slice(span.start, span.end);
      if (span.special) {
        ids.push(this.ids.get(spanText)!);
        offsets.push([span.start, span.end]);
        continue;
      }
      for (const m of spanText.matchAll(PRE_TOKENIZERS[this.preTokenizer])) {
        ids.push(this.ids.get(m[0]) ?? this.unkId);
        offsets.push([span.start + m.index, span.start + m.index + m[0].length]);
      }
    }
    return { ids, offsets };
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
    const word = this.vocab[id];
    if (word === undefined) {
      throw new Error(`token id ${id} is not in the vocabulary (size ${this.vocabSize})`);
    }
    return word;
  }

  idOf(token: string): number | undefined {
    return this.ids.get(token);
  }
}

// ---------------------------------------------------------------------------------------------
// Loading and subject lookup

/** A tokenizer.json of either kind, chosen by its model.type. */
export function tokenizerFromJson(json: string, source = "tokenizer.json"): Tokenizer {
  const root = parseJson(json, source);
  const type = isObject(root) && isObject(root.model) ? root.model.type : undefined;
  if (type === "BPE") return BpeTokenizer.fromTokenizerJson(json, source);
  if (type === "WordLevel") return WordLevelTokenizer.fromTokenizerJson(json, source);
  throw new Error(
    `${source}: model.type is ${JSON.stringify(type)}; supported are "BPE" (byte-level) and "WordLevel"`,
  );
}

async function readTextIfExists(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
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
 *  "The Eiffel Tower is" gives GPT-2's tokens of " Eiffel Tower" (" E", "iff", "el", " Tower"). */
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
    // An empty range holds the leading bytes of the multi-byte character that starts there.
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
