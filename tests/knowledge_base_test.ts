// Checks the invented knowledge base and every dataset built from it: determinism, the record
// schemas, what neighborhoods / attribute prompts / counterfactual targets really are, that
// held-out templates never leak into the corpus, and that the corpus vocabulary covers every prompt.
import assert from "node:assert/strict";
import {
  type CounterfactRecord,
  counterfactRecords,
  datasetFiles,
  ENTITY_TYPE_TEMPLATE,
  generateKnowledgeBase,
  INTERJECTIONS,
  type KbOptions,
  type KnowledgeBase,
  knownFactsRecords,
  SUBJECT_TYPES,
  trainingCorpus,
  type ZsreRecord,
  zsreRecords,
} from "../experiments/knowledge/knowledge_base.ts";
import { parseDataset } from "../experiments/data/datasets.ts";
import { DEFAULT_TRAIN } from "../experiments/knowledge/train.ts";

interface Built {
  kb: KnowledgeBase;
  corpus: string[];
  counterfact: CounterfactRecord[];
  known: ReturnType<typeof knownFactsRecords>;
  zsre: ZsreRecord[];
}

function build(opts: KbOptions): Built {
  const kb = generateKnowledgeBase(opts);
  return {
    kb,
    corpus: trainingCorpus(kb),
    counterfact: counterfactRecords(kb),
    known: knownFactsRecords(kb),
    zsre: zsreRecords(kb),
  };
}

// The default knowledge base, plus small ones with other seeds and options, for the invariants.
const DEFAULT = build({ seed: 0 });
const VARIANTS: [string, Built][] = [
  ["default seed 0", DEFAULT],
  [
    "seed 7, small",
    build({ seed: 7, subjectsPerType: { person: 20, place: 12, organisation: 9, work: 11 } }),
  ],
  [
    "seed 123, 3 objects/relation",
    build({ seed: 123, subjectsPerType: { person: 30, work: 15 }, objectsPerRelation: 3 }),
  ],
  [
    "seed -5, 2 subjects/type",
    build({ seed: -5, subjectsPerType: { person: 2, place: 2, organisation: 2, work: 2 } }),
  ],
];

const occurrences = (text: string, part: string) => text.split(part).length - 1;
const render = (template: string, subject: string) => template.replace("{}", subject);
const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
/** Matches any sentence that starts with the template, whatever the subject, then one more word. */
const templateRegex = (template: string) => {
  const [before, after] = template.split("{}").map(escapeRegex);
  return new RegExp(`^${before}.+${after} \\S`);
};
/** The corpus lines that state `prompt object .` with the subject followed by nothing or an interjection. */
const statedAs = (template: string, subject: string, object: string) =>
  ["", ...INTERJECTIONS.map((i) => ` ${i}`)].map((aside) =>
    `${render(template, subject + aside)} ${object} .`
  );

Deno.test("same seed gives byte-identical output, another seed a different one", () => {
  const again = build({ seed: 0 });
  for (const key of ["kb", "corpus", "counterfact", "known", "zsre"] as const) {
    assert.equal(
      JSON.stringify(again[key]),
      JSON.stringify(DEFAULT[key]),
      `${key} differs for the same seed`,
    );
  }
  const other = build({ seed: 1 });
  for (const key of ["kb", "corpus", "counterfact", "known", "zsre"] as const) {
    assert.notEqual(
      JSON.stringify(other[key]),
      JSON.stringify(DEFAULT[key]),
      `${key} identical for seeds 0 and 1`,
    );
  }
  const names0 = new Set(DEFAULT.kb.subjects.map((s) => s.name));
  const shared = other.kb.subjects.filter((s) => names0.has(s.name)).length;
  assert.ok(shared < other.kb.subjects.length / 4, `seeds 0 and 1 share ${shared} subject names`);
});

Deno.test("default sizes fit a small model: 300-500 subjects, 1000-2000 facts, vocabulary < 2000, 8+ relations", () => {
  const { kb, corpus } = DEFAULT;
  assert.ok(kb.subjects.length >= 300 && kb.subjects.length <= 500, `${kb.subjects.length} subjects`);
  assert.ok(kb.facts.length >= 1000 && kb.facts.length <= 2000, `${kb.facts.length} facts`);
  assert.ok(kb.vocabulary.length < 2000, `${kb.vocabulary.length} vocabulary words`);
  assert.ok(kb.relations.length >= 8, `${kb.relations.length} relations`);
  assert.ok(corpus.length > kb.facts.length * 3, `${corpus.length} corpus sentences`);
  assert.deepEqual(new Set(kb.relations.map((r) => r.subjectType)), new Set(SUBJECT_TYPES));
});

Deno.test("options set the sizes, and bad options name the field", () => {
  const { kb } = VARIANTS[2][1];
  assert.equal(kb.subjects.filter((s) => s.type === "person").length, 30);
  assert.equal(kb.subjects.filter((s) => s.type === "work").length, 15);
  assert.equal(kb.subjects.filter((s) => s.type === "place").length, 90); // default
  for (const r of kb.relations) assert.equal(r.objects.length, 3, r.id);
  const bad: [KbOptions, RegExp][] = [
    [{ seed: 1.5 }, /seed/],
    [{ seed: 0, subjectsPerType: { person: 0 } }, /subjectsPerType\.person/],
    [{ seed: 0, subjectsPerType: { robots: 3 } as never }, /subjectsPerType\.robots/],
    [{ seed: 0, objectsPerRelation: 1 }, /objectsPerRelation/],
    [{ seed: 0, maxNeighbors: -1 }, /maxNeighbors/],
    [{ seed: 0, interjectionRate: 1.5 }, /interjectionRate/],
    [{ seed: 0, tagLines: -1 }, /tagLines/],
  ];
  for (const [opts, message] of bad) {
    assert.throws(() => generateKnowledgeBase(opts), message, JSON.stringify(opts));
  }
});

for (const [label, { kb, corpus, counterfact, known, zsre }] of VARIANTS) {
  const relationById = new Map(kb.relations.map((r) => [r.id, r]));
  const subjectNames = kb.subjects.map((s) => s.name);

  Deno.test(`${label}: relations, subjects and facts are well formed`, () => {
    for (const r of kb.relations) {
      assert.match(r.id, /^P\d+$/);
      assert.ok(
        r.trainingTemplates.length >= 3 && r.trainingTemplates.length <= 6,
        `${r.id} training templates`,
      );
      assert.ok(r.heldOutTemplates.length >= 2, `${r.id} held-out templates`);
      for (const t of [...r.trainingTemplates, ...r.heldOutTemplates]) {
        assert.equal(occurrences(t, "{}"), 1, `${r.id} template "${t}"`);
        assert.ok(!t.endsWith("{}"), `${r.id} template "${t}" must continue after the subject`);
      }
      for (const o of r.objects) assert.match(o, /^\w+$/, `${r.id} object "${o}" must be one word`);
    }
    for (const s of kb.subjects) {
      const words = s.name.split(" ");
      assert.ok(words.length >= 3 && words.length <= 4, `subject "${s.name}" has ${words.length} syllables`);
      for (const w of words) assert.match(w, /^\w+$/, `subject "${s.name}"`);
      assert.match(s.kind, /^\w+$/);
    }
    assert.equal(new Set(subjectNames).size, subjectNames.length, "duplicate subject names");
    // Every subject has exactly one fact per relation of its type, and ids are 0..n-1.
    kb.facts.forEach((f, i) => assert.equal(f.id, i));
    const facts = new Set(kb.facts.map((f) => `${f.subject}\t${f.relation}`));
    assert.equal(facts.size, kb.facts.length, "a subject has two facts for one relation");
    for (const s of kb.subjects) {
      for (const r of kb.relations.filter((r) => r.subjectType === s.type)) {
        assert.ok(facts.has(`${s.name}\t${r.id}`), `${s.name} lacks ${r.id}`);
      }
    }
    for (const f of kb.facts) {
      const r = relationById.get(f.relation)!;
      assert.equal(f.subjectType, kb.subjects.find((s) => s.name === f.subject)!.type, `fact ${f.id}`);
      assert.equal(f.subjectType, r.subjectType, `fact ${f.id}`);
      assert.equal(f.relationName, r.name, `fact ${f.id}`);
      assert.ok(r.objects.includes(f.object), `fact ${f.id} object ${f.object}`);
      assert.ok(r.trainingTemplates.includes(f.template), `fact ${f.id} template`);
    }
  });

  Deno.test(`${label}: no subject is a substring (so no prefix) of another`, () => {
    for (const a of subjectNames) {
      for (const b of subjectNames) {
        if (a !== b) assert.ok(!b.includes(a), `"${a}" is inside "${b}"`);
      }
    }
  });

  Deno.test(`${label}: subject syllables are never template, object, kind or interjection words`, () => {
    const reserved = new Set([
      ...ENTITY_TYPE_TEMPLATE.split(" "),
      ...INTERJECTIONS.flatMap((i) => i.split(" ")),
      ...kb.subjects.map((s) => s.kind),
      ...kb.relations.flatMap((
        r,
      ) => [...r.objects, ...[...r.trainingTemplates, ...r.heldOutTemplates].flatMap((t) => t.split(" "))]),
    ]);
    for (const s of kb.subjects) {
      for (const w of s.name.split(" ")) {
        assert.ok(!reserved.has(w.toLowerCase()) && !reserved.has(w), `subject "${s.name}" uses "${w}"`);
      }
    }
  });

  Deno.test(`${label}: names share a pool of about sqrt(N) syllables, so no one token names a subject`, () => {
    const syllables = new Set(kb.subjects.flatMap((s) => s.name.split(" ")));
    const pool = Math.max(4, Math.ceil(Math.sqrt(kb.subjects.length)));
    assert.ok(syllables.size <= pool, `${syllables.size} syllables for ${kb.subjects.length} subjects`);
    if (kb.subjects.length >= 100) {
      // Every syllable recurs: each is in at least 3 names.
      for (const syllable of syllables) {
        const names = kb.subjects.filter((s) => s.name.split(" ").includes(syllable)).length;
        assert.ok(names >= 3, `syllable ${syllable} is in ${names} names`);
      }
    }
  });

  Deno.test(`${label}: objects are dealt evenly, so no object can be guessed from its frequency`, () => {
    for (const r of kb.relations) {
      const counts = new Map(r.objects.map((o) => [o, 0]));
      for (const f of kb.facts.filter((f) => f.relation === r.id)) {
        counts.set(f.object, counts.get(f.object)! + 1);
      }
      const values = [...counts.values()];
      assert.ok(Math.max(...values) - Math.min(...values) <= 1, `${r.id} object counts ${values}`);
    }
  });

  Deno.test(`${label}: for one subject type no template is a word-prefix of another (or of "{} is a")`, () => {
    for (const type of SUBJECT_TYPES) {
      const templates = [
        ENTITY_TYPE_TEMPLATE,
        ...kb.relations.filter((r) => r.subjectType === type)
          .flatMap((r) => [...r.trainingTemplates, ...r.heldOutTemplates]),
      ];
      for (const a of templates) {
        for (const b of templates) {
          if (a !== b) assert.ok(!(b + " ").startsWith(a + " "), `${type}: "${a}" is a prefix of "${b}"`);
        }
      }
    }
  });

  Deno.test(`${label}: the corpus states every fact in every training template, and each subject's type`, () => {
    const lines = new Set(corpus);
    assert.equal(lines.size, corpus.length, "duplicate corpus sentences");
    let stated = 0, withAside = 0;
    const count = (template: string, subject: string, object: string) => {
      const found = statedAs(template, subject, object).filter((l) => lines.has(l));
      assert.equal(found.length, 1, `${render(template, subject)} ${object}: stated ${found.length} times`);
      stated++;
      if (!lines.has(`${render(template, subject)} ${object} .`)) withAside++;
    };
    for (const f of kb.facts) {
      for (const t of relationById.get(f.relation)!.trainingTemplates) count(t, f.subject, f.object);
    }
    for (const s of kb.subjects) count(ENTITY_TYPE_TEMPLATE, s.name, s.kind);
    // The interjection rate (0.8 by default) holds within 5 binomial standard deviations.
    const rate = kb.options.interjectionRate, sd = Math.sqrt(rate * (1 - rate) / stated);
    assert.ok(
      Math.abs(withAside / stated - rate) <= 5 * sd + 1e-9,
      `${withAside}/${stated} with an interjection`,
    );
  });

  Deno.test(`${label}: each subject has its tag lines, listing exactly its objects with no relation word`, () => {
    for (const s of kb.subjects) {
      const objects = kb.facts.filter((f) => f.subject === s.name).map((f) => f.object).sort();
      const tags = corpus.filter((l) => l.startsWith(`${s.name} `) && !l.includes(" is a "))
        .filter((l) => !INTERJECTIONS.some((i) => l.startsWith(`${s.name} ${i}`)))
        .filter((l) => !kb.relations.some((r) => r.trainingTemplates.some((t) => templateRegex(t).test(l))));
      const orders = [...Array(objects.length).keys()].reduce((n, i) => n * (i + 1), 1);
      assert.equal(tags.length, Math.min(orders, kb.options.tagLines), `${s.name}: ${tags.length} tag lines`);
      for (const tag of tags) {
        const listed = tag.slice(s.name.length + 1, -2).split(" , ");
        assert.deepEqual([...listed].sort(), objects, `tag line "${tag}"`);
      }
    }
  });

  Deno.test(`${label}: held-out templates never appear in the corpus`, () => {
    for (const r of kb.relations) {
      // The matcher does find the training templates, so it would find a leaked held-out one.
      for (const t of r.trainingTemplates) {
        assert.ok(corpus.some((l) => templateRegex(t).test(l)), `"${t}" unmatched`);
      }
      for (const t of r.heldOutTemplates) {
        const leak = corpus.find((l) => templateRegex(t).test(l));
        assert.equal(leak, undefined, `${r.id} held-out "${t}" in corpus: ${leak}`);
      }
    }
    const paraphrases = new Set(counterfact.flatMap((c) => c.paraphrase_prompts));
    for (const line of corpus) {
      const words = line.split(" ");
      for (let n = 1; n < words.length; n++) {
        assert.ok(
          !paraphrases.has(words.slice(0, n).join(" ")),
          `paraphrase prompt starts corpus line "${line}"`,
        );
      }
    }
  });

  Deno.test(`${label}: vocabulary is exactly the corpus words and covers every prompt and target`, () => {
    const vocabulary = new Set(kb.vocabulary);
    assert.equal(vocabulary.size, kb.vocabulary.length, "duplicate vocabulary words");
    const corpusWords = new Set(corpus.flatMap((l) => l.split(" ")));
    assert.deepEqual(vocabulary, corpusWords);
    for (const line of corpus) {
      // A Whitespace pre-tokenizer (\w+|[^\w\s]+) splits every line exactly at its spaces.
      assert.deepEqual(line.match(/\w+|[^\w\s]+/g), line.split(" "), `line "${line}"`);
    }
    const prompts = [
      ...counterfact.flatMap((c) => [
        c.requested_rewrite.prompt.replace("{}", c.requested_rewrite.subject),
        c.requested_rewrite.target_new.str,
        c.requested_rewrite.target_true.str,
        ...c.paraphrase_prompts,
        ...c.neighborhood_prompts,
        ...c.attribute_prompts,
        ...c.generation_prompts,
      ]),
      ...known.map((k) => k.prompt + k.prediction),
    ];
    for (const p of prompts) {
      for (const w of p.trim().split(" ")) {
        assert.ok(vocabulary.has(w), `"${w}" of "${p}" is not in the vocabulary`);
      }
    }
  });

  Deno.test(`${label}: zsRE records follow MEND's schema and mean what they say`, () => {
    assert.equal(zsre.length, kb.facts.length);
    const lines = new Set(corpus);
    const seenRephrase = new Set<string>(), seenLoc = new Set<string>();
    zsre.forEach((z, i) => {
      const where = `zsre record ${i}`;
      const fact = kb.facts[i], relation = relationById.get(fact.relation)!;
      assert.deepEqual(
        Object.keys(z),
        ["subject", "src", "pred", "rephrase", "alt", "answers", "loc", "loc_ans", "cond"],
        where,
      );
      assert.equal(z.subject, fact.subject, where);
      // src: the fact's training template, which the corpus states (so the model was taught it).
      assert.equal(z.src, render(fact.template, fact.subject), where);
      assert.ok(statedAs(fact.template, fact.subject, fact.object).some((l) => lines.has(l)), where);
      assert.deepEqual([z.pred, z.answers, z.alt], [fact.object, [fact.object], fact.counterfactual], where);
      assert.notEqual(z.alt, fact.object, where);
      // rephrase: one of the relation's held-out templates, never in the corpus.
      assert.ok(relation.heldOutTemplates.map((t) => render(t, fact.subject)).includes(z.rephrase), where);
      seenRephrase.add(z.rephrase.replace(fact.subject, "{}"));
      // loc: another subject's fact in its own training template, with that fact's true object.
      const other = kb.facts.find((f) => render(f.template, f.subject) === z.loc);
      assert.ok(other, `${where}: loc "${z.loc}" is no fact's prompt`);
      assert.notEqual(other.subject, fact.subject, where);
      assert.equal(z.loc_ans, other.object, where);
      seenLoc.add(other.subject);
      assert.equal(z.cond, `${z.pred} >> ${z.alt} || ${z.src}`, where);
    });
    // Both held-out templates and many subjects are drawn (a constant draw would pass the checks above).
    if (zsre.length >= 20) {
      assert.ok(seenRephrase.size > kb.relations.length, `${seenRephrase.size} rephrase templates used`);
      assert.ok(seenLoc.size > kb.subjects.length / 4, `${seenLoc.size} loc subjects used`);
    }
    // Locus's dataset reader takes them as zsRE cases: src as the prompt, alt as the new object.
    const { format, cases } = parseDataset(JSON.stringify(zsre), "zsre.json");
    assert.equal(format, "zsre");
    assert.deepEqual(
      [
        cases[0].template,
        cases[0].targetNew,
        cases[0].targetTrue,
        cases[0].paraphrases,
        cases[0].neighborhood,
      ],
      [
        kb.facts[0].template,
        zsre[0].alt,
        zsre[0].pred,
        [zsre[0].rephrase],
        [{ prompt: zsre[0].loc, answer: zsre[0].loc_ans, kind: "locality" }],
      ],
    );
  });

  Deno.test(`${label}: CounterFact records follow ROME's schema and mean what they say`, () => {
    assert.equal(counterfact.length, kb.facts.length);
    // Every training prompt of every fact, to look up which fact a rendered prompt belongs to.
    const factOfPrompt = new Map(
      kb.facts.flatMap((f) =>
        relationById.get(f.relation)!.trainingTemplates.map((t) => [render(t, f.subject), f] as const)
      ),
    );
    counterfact.forEach((c, i) => {
      const where = `counterfact record ${i}`;
      assert.deepEqual(Object.keys(c), [
        "case_id",
        "pararel_idx",
        "requested_rewrite",
        "paraphrase_prompts",
        "neighborhood_prompts",
        "attribute_prompts",
        "generation_prompts",
      ], where);
      const rw = c.requested_rewrite;
      assert.deepEqual(Object.keys(rw).sort(), [
        "prompt",
        "relation_id",
        "subject",
        "target_new",
        "target_true",
      ], where);
      assert.equal(c.case_id, i, where);
      assert.equal(typeof c.pararel_idx, "number", where);
      const fact = kb.facts[c.pararel_idx];
      assert.equal(rw.subject, fact.subject, where);
      assert.equal(rw.relation_id, fact.relation, where);
      assert.equal(occurrences(rw.prompt, "{}"), 1, `${where} prompt "${rw.prompt}"`);
      const relation = relationById.get(rw.relation_id)!;
      assert.ok(relation.trainingTemplates.includes(rw.prompt), where);
      for (const target of [rw.target_new, rw.target_true]) {
        assert.deepEqual(Object.keys(target).sort(), ["id", "str"], where);
        assert.equal(target.id, `${relation.objectCategory}:${target.str}`, where);
        assert.ok(
          relation.objects.includes(target.str),
          `${where}: ${target.str} not a ${relation.id} object`,
        );
      }
      assert.equal(rw.target_true.str, fact.object, where);
      assert.notEqual(rw.target_new.str, rw.target_true.str, where);

      for (
        const field of [
          "paraphrase_prompts",
          "neighborhood_prompts",
          "attribute_prompts",
          "generation_prompts",
        ] as const
      ) {
        assert.ok(
          Array.isArray(c[field]) && c[field].every((p) => typeof p === "string" && !p.includes("{}")),
          `${where}.${field}`,
        );
        assert.equal(new Set(c[field]).size, c[field].length, `${where}.${field} has duplicates`);
      }
      assert.deepEqual(
        c.paraphrase_prompts,
        relation.heldOutTemplates.map((t) => render(t, rw.subject)),
        where,
      );
      for (const p of [...c.paraphrase_prompts, ...c.generation_prompts]) {
        assert.equal(occurrences(p, rw.subject), 1, `${where}: "${p}" should hold the subject once`);
      }
      assert.ok(c.generation_prompts.includes(render(ENTITY_TYPE_TEMPLATE, rw.subject)), where);

      // Neighborhood: other subjects, same relation, same TRUE object, and as many as exist (up to the cap).
      // Attribute: other subjects, same relation, whose true object is the NEW target.
      const expect = [["neighborhood_prompts", rw.target_true.str, kb.options.maxNeighbors], [
        "attribute_prompts",
        rw.target_new.str,
        kb.options.maxAttributePrompts,
      ]] as const;
      for (const [field, object, cap] of expect) {
        for (const p of c[field]) {
          const other = factOfPrompt.get(p);
          assert.ok(other, `${where}.${field}: "${p}" is no training prompt`);
          assert.equal(other.relation, rw.relation_id, `${where}.${field}: "${p}"`);
          assert.equal(other.object, object, `${where}.${field}: "${p}"`);
          assert.notEqual(other.subject, rw.subject, `${where}.${field}: "${p}"`);
          assert.ok(!p.includes(rw.subject), `${where}.${field}: "${p}" mentions the subject`);
        }
        const available = kb.facts.filter((f) =>
          f.relation === rw.relation_id && f.object === object && f.subject !== rw.subject
        );
        assert.equal(c[field].length, Math.min(cap, available.length), `${where}.${field} count`);
      }
    });
    // Objects are dealt evenly, so (with enough subjects) every target_new has attribute prompts.
    if (kb.subjects.length >= 100) assert.ok(counterfact.every((c) => c.attribute_prompts.length > 0));
  });

  Deno.test(`${label}: known-fact records follow known_1000's schema and are stated in the corpus`, () => {
    const lines = new Set(corpus);
    assert.equal(known.length, kb.facts.length);
    known.forEach((k, i) => {
      const where = `known-fact record ${i}`;
      assert.deepEqual(Object.keys(k), [
        "known_id",
        "subject",
        "attribute",
        "template",
        "prediction",
        "prompt",
        "relation_id",
      ], where);
      assert.equal(k.known_id, i, where);
      for (
        const field of ["subject", "attribute", "template", "prediction", "prompt", "relation_id"] as const
      ) {
        assert.equal(typeof k[field], "string", `${where}.${field}`);
      }
      assert.equal(occurrences(k.template, "{}"), 1, `${where} template "${k.template}"`);
      assert.equal(k.prompt, render(k.template, k.subject), where);
      assert.equal(k.prediction, ` ${k.attribute} .`, where);
      assert.ok(
        statedAs(k.template, k.subject, k.attribute).some((l) => lines.has(l)),
        `${where}: "${k.prompt}${k.prediction}" not in corpus`,
      );
      const fact = kb.facts[i];
      assert.deepEqual(
        [k.subject, k.attribute, k.relation_id],
        [fact.subject, fact.object, fact.relation],
        where,
      );
    });
  });
}

Deno.test("CLI writes the five files, identical to the library's output", async () => {
  const out = await Deno.makeTempDir({ prefix: "locus_kb_" });
  try {
    const args = [
      "run",
      "-A",
      "experiments/commands/generate_kb.ts",
      "--seed",
      "7",
      "--out",
      out,
      "--persons",
      "20",
      "--places",
      "12",
      "--organisations",
      "9",
      "--works",
      "11",
    ];
    const result = await new Deno.Command(Deno.execPath(), { args, cwd: new URL("..", import.meta.url) })
      .output();
    const stdout = new TextDecoder().decode(result.stdout);
    assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
    const { kb, corpus, counterfact, known } = VARIANTS[1][1];
    assert.match(
      stdout,
      new RegExp(`${kb.subjects.length} subjects .* ${kb.facts.length} facts.* ${corpus.length} sentences`),
    );
    assert.equal(await Deno.readTextFile(`${out}/corpus.txt`), corpus.join("\n") + "\n");
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${out}/kb.json`)), kb);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${out}/counterfact.json`)), counterfact);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${out}/known_facts.json`)), known);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${out}/zsre.json`)), VARIANTS[1][1].zsre);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("CLI --embedded writes the embedded model's datasets as train does, and refuses other options", async () => {
  const out = await Deno.makeTempDir({ prefix: "locus_kb_embedded_" });
  const run = (...extra: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "experiments/commands/generate_kb.ts", "--embedded", "--out", out, ...extra],
      cwd: new URL("..", import.meta.url),
    }).output();
  try {
    const result = await run();
    assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
    const expected = datasetFiles(
      generateKnowledgeBase({ seed: DEFAULT_TRAIN.seed, subjectsPerType: DEFAULT_TRAIN.subjects }),
    );
    const written = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    assert.deepEqual(written, Object.keys(expected).sort()); // no kb.json in a model folder
    for (const [name, text] of Object.entries(expected)) {
      assert.ok((await Deno.readTextFile(`${out}/${name}`)) === text, `${name} differs from datasetFiles`);
    }
    const refused = await run("--seed", "3");
    assert.equal(refused.code, 1);
    assert.match(
      new TextDecoder().decode(refused.stderr),
      /--embedded fixes the knowledge base; drop --seed/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
