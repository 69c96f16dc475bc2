/// <reference lib="dom" />
// The web page's logic (web/index.html): loads the embedded model (or a dropped Hugging Face folder) into
// Locus's engine on the browser's WebGPU adapter and offers predict, causal tracing and ROME/MEMIT edits
// with undo and download. Every computation is the engine's and experiments' own code (the same modules
// the command line runs); this file only reads the form, calls them and draws the results.
// Raw results are kept in `globalThis.locus` for tests (tests/web_test.ts compares them with Deno's).
import { browserIo, io, setIo } from "../engine/io.ts";
import { Gpu, NoAdapterError } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { type Prediction, predictNext } from "../engine/predict.ts";
import { encodeSafetensors } from "../engine/safetensors.ts";
import { loadTokenizer, type Tokenizer } from "../engine/tokenizer.ts";
import { parseDataset } from "../experiments/data/datasets.ts";
import { type AppliedEdit, applyEdit, type Edit, editTensors } from "../experiments/editing/edit.ts";
import { statsHparams } from "../experiments/editing/hparams.ts";
import {
  computeEdits,
  editedLayers,
  methodConfig,
  type MethodName,
  statsLayers,
  templateStartWords,
} from "../experiments/editing/methods.ts";
import { type EditingCase, editingCase } from "../experiments/editing/problems.ts";
import { type KeyStats, keyStats } from "../experiments/editing/stats.ts";
import { heatmapSvg } from "../experiments/pictures/heatmap.ts";
import { scaledMlpWindow } from "../experiments/localization/layer_selection.ts";
import { probeAnswers, type ProbeResult, probeResults } from "../experiments/evaluation/metrics.ts";
import { greedyNextTokens } from "../experiments/evaluation/recall.ts";
import { type FactTrace, STATE_KINDS, traceFact } from "../experiments/localization/tracing.ts";

/** shaders/*.wgsl by name, inlined by web/build.ts (esbuild's `define`). */
declare const LOCUS_SHADERS: Record<string, string>;

const EMBEDDED = "weights/locus-kb";
const DROPPED = "dropped";

/** What the page computed, for tests and for the console. */
interface Results {
  adapter?: string;
  model?: string;
  /** The prompt, its token ids (the page's tokenizer's) and the k most likely next tokens. */
  predict?: { prompt: string; ids: number[]; top: Prediction[] };
  trace?: FactTrace;
  edit?: {
    method: string;
    layers: number[];
    request: { prompt: string; subject: string; target: string };
    targetTrue: string;
    /** What keyStats said about each layer's statistics (shipped, or computed here). */
    statsSource: string[];
    probes: ProbeResult[];
  };
  undo?: { identical: boolean; top: Prediction[] };
}

/** `finished` counts the buttons' (and loads') completed work, so a driver can wait for the one it started. */
const locus = { busy: true, error: null as string | null, finished: 0, results: {} as Results };
(globalThis as unknown as { locus: typeof locus }).locus = locus;

const $ = <T extends HTMLElement = HTMLInputElement>(id: string) => document.getElementById(id) as T;
const value = (id: string) => $(id).value.trim();

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);
}

function status(text: string, error = false): void {
  const el = $<HTMLParagraphElement>("status");
  el.textContent = text;
  el.className = error ? "error" : "";
}

const percent = (p: number) => `${(100 * p).toFixed(p < 0.001 ? 3 : 1)}%`;
const bar = (p: number, cls = "") =>
  `<span class="bar ${cls}" style="width:${(150 * p).toFixed(1)}px"></span>`;

let gpu: Gpu;
let model: Model | null = null;
let tok: Tokenizer;
let dir = EMBEDDED;
let cases: EditingCase[] = [];
/** Statistics computed in this page (shipped ones are re-read cheaply from the browser's cache). */
let statsMemo = new Map<number, KeyStats>();
let applied: AppliedEdit | null = null;
let lastEdit: Edit | null = null;

/** Runs one button's work with the buttons disabled, the time taken and any error shown. */
async function task(name: string, work: () => Promise<string>): Promise<void> {
  if (locus.busy && name !== "load") return;
  locus.busy = true;
  locus.error = null;
  for (const b of document.querySelectorAll("button")) b.disabled = true;
  const started = performance.now();
  try {
    status(`${name}…`);
    const done = await work();
    status(
      `${done} (${((performance.now() - started) / 1000).toFixed(1)} s) on ${
        gpu?.describe() ?? "no adapter"
      }`,
    );
  } catch (e) {
    locus.error = (e as Error).message;
    status(`${name} failed: ${(e as Error).message}`, true);
    console.error(e);
  } finally {
    for (const b of document.querySelectorAll("button")) b.disabled = false;
    $<HTMLButtonElement>("undo").disabled = applied === null;
    $<HTMLButtonElement>("download").disabled = lastEdit === null;
    $<HTMLButtonElement>("edit").disabled = applied !== null;
    locus.finished++;
    locus.busy = false;
  }
}

// ------------------------------------------------------------------------------------------ model

/** Loads the model of `folder` (a path the page fetches, or DROPPED), shown to the user as `name`. */
async function loadModel(folder: string, name = folder): Promise<string> {
  // The previous model's weights leave the GPU (an applied edit goes with them).
  for (const t of model?.params.values() ?? []) t.destroy();
  model = null;
  applied = null;
  lastEdit = null;
  statsMemo = new Map();
  dir = folder;
  // The previous model's results go too (they would read as this model's).
  for (const id of ["predict-out", "trace-out", "edit-out"]) $(id).innerHTML = "";
  $<HTMLProgressElement>("trace-progress").hidden = true;
  model = await Model.load(gpu, folder);
  tok = await loadTokenizer(folder);
  const c = model.config;
  locus.results = { adapter: gpu.describe(), model: name };
  $<HTMLParagraphElement>("model-info").textContent =
    `${folder === DROPPED ? `Dropped folder ${name}` : name}: ` +
    `${c.family}, ${model.nLayer} layers, width ${c.nEmbd}, vocabulary ${c.vocabSize}`;
  const dataset = await io().readText(`${folder}/counterfact.json`);
  cases = dataset === null ? [] : parseDataset(dataset, `${folder}/counterfact.json`).cases.slice(0, 100)
    .map(editingCase);
  const select = $<HTMLSelectElement>("case");
  select.innerHTML = cases.map((k, i) =>
    `<option value="${i}">${escapeHtml(k.prompt.replace("{}", k.subject))} → ${
      escapeHtml(k.targetTrue)
    }</option>`
  ).join("");
  if (cases.length > 0) {
    // The first of the first 20 facts the model answers right (the demo's choice too).
    const probe = cases.slice(0, 20);
    const predicted = await greedyNextTokens(
      model,
      probe.map((k) => tok.encode(k.prompt.replace("{}", k.subject))),
    );
    const known = probe.findIndex((k, i) =>
      tok.tokenString(predicted[i]).trim() === k.targetTrue.split(" ")[0]
    );
    select.value = String(Math.max(0, known));
    fillCase(Math.max(0, known));
  }
  const rome = methodConfig(model, "rome");
  $("layers").value = String(rome.hparams.layer);
  $("v-steps").value = String(rome.hparams.vNumGradSteps);
  return `Loaded ${name}${cases.length ? ` with ${cases.length} facts from counterfact.json` : ""}`;
}

function fillCase(i: number): void {
  const k = cases[i];
  $("prompt").value = k.prompt.replace("{}", k.subject);
  $("subject").value = k.subject;
  $("target-true").value = k.targetTrue;
  $("target-new").value = k.targetNew;
  $("paraphrase").value = k.paraphrases[0] ?? "";
  $("neighbour").value = k.neighbors[0] ?? "";
}

/** Files of a dropped folder, keyed "dropped/<path inside the folder>", and the folder's name. */
async function droppedFiles(
  items: DataTransferItemList,
): Promise<{ files: Map<string, Blob>; name: string }> {
  const files = new Map<string, Blob>();
  const walk = async (entry: FileSystemEntry, path: string): Promise<void> => {
    if (entry.isFile) {
      files.set(
        `${DROPPED}/${path}`,
        await new Promise<File>((ok, fail) => (entry as FileSystemFileEntry).file(ok, fail)),
      );
    } else if (entry.isDirectory) {
      const reader = (entry as FileSystemDirectoryEntry).createReader();
      for (;;) {
        const batch = await new Promise<FileSystemEntry[]>((ok, fail) => reader.readEntries(ok, fail));
        if (batch.length === 0) break;
        for (const e of batch) await walk(e, path === "" ? e.name : `${path}/${e.name}`);
      }
    }
  };
  const entries = [...items].map((it) => it.webkitGetAsEntry()).filter((e) => e !== null);
  // One dropped folder: its files at the top; loose files: as they are.
  const folder = entries.length === 1 && entries[0].isDirectory;
  for (const e of entries) await walk(e, folder ? "" : e.name);
  return { files, name: folder ? entries[0].name : "(dropped files)" };
}

async function loadDropped({ files, name }: { files: Map<string, Blob>; name: string }): Promise<void> {
  await task("Loading the dropped folder", async () => {
    if (![...files.keys()].some((k) => k === `${DROPPED}/config.json`)) {
      throw new Error(
        `the dropped files have no config.json at the top (got ${[...files.keys()].slice(0, 5).join(", ")})`,
      );
    }
    setIo(browserIo(LOCUS_SHADERS, files));
    return await loadModel(DROPPED, name);
  });
}

// ------------------------------------------------------------------------------------------ predict

/** A token that is only white space, made visible ("␣" per space, "↵" per line break). */
function visible(token: string): string {
  return token.trim() === "" ? token.replace(/ /g, "␣").replace(/\n/g, "↵") : token;
}

function predictionTable(top: Prediction[]): string {
  return `<table><tr><th>next word</th><th>probability</th><th></th></tr>${
    top.map((p) =>
      `<tr><td>${escapeHtml(visible(p.token))}</td><td class="num">${percent(p.prob)}</td><td>${
        bar(p.prob)
      }</td></tr>`
    ).join("")
  }</table>`;
}

function need(id: string, what: string): string {
  const v = value(id);
  if (!v) throw new Error(`${what} is empty`);
  return v;
}

async function predict(): Promise<string> {
  const prompt = need("prompt", "the prompt");
  const k = Number(value("top-k"));
  const ids = tok.encode(prompt);
  const top = await predictNext(model!, ids, k, tok);
  locus.results.predict = { prompt, ids, top };
  $("predict-out").innerHTML = predictionTable(top);
  return `Predicted after "${prompt}"`;
}

// ------------------------------------------------------------------------------------------ trace

async function trace(): Promise<string> {
  const fact = {
    prompt: need("prompt", "the prompt"),
    subject: need("subject", "the subject"),
    target: need("target-true", "the true object"),
  };
  if (!fact.prompt.includes(fact.subject)) {
    throw new Error(`the prompt does not contain the subject "${fact.subject}"`);
  }
  const samples = Number(value("samples"));
  const w = scaledMlpWindow(model!.nLayer);
  const progress = $<HTMLProgressElement>("trace-progress");
  progress.hidden = false;
  progress.max = STATE_KINDS.length;
  const parts: FactTrace[] = [];
  let merged = {} as FactTrace;
  // One kind at a time, so each heatmap appears as soon as its grid is done.
  for (const [i, kind] of STATE_KINDS.entries()) {
    progress.value = i;
    $("trace-step").textContent = `${kind} (${i + 1} of ${STATE_KINDS.length})`;
    const t = await traceFact(model!, tok, fact, {
      kinds: [kind],
      window: { resid: 1, mlp: w, attn: w },
      samples,
    });
    parts.push(t);
    merged = { ...parts[0], grids: parts.flatMap((p) => p.grids) };
    $("trace-out").innerHTML =
      `<p>p(${escapeHtml(fact.target)}): clean ${percent(merged.clean)}, subject noised ` +
      `${percent(merged.corrupted!)}; darker = restoring that hidden state brings back more of it. ` +
      `Windows: MLP and attention ${w} layers.</p>${heatmapSvg(merged)}`;
  }
  progress.value = STATE_KINDS.length;
  $("trace-step").textContent = "";
  locus.results.trace = merged;
  return `Traced "${fact.prompt}" → ${fact.target} (${samples} noise samples)`;
}

// ------------------------------------------------------------------------------------------ edit

async function edit(): Promise<string> {
  const m = model!;
  const prompt = need("prompt", "the prompt"), subject = need("subject", "the subject");
  const targetTrue = need("target-true", "the true object"), targetNew = need("target-new", "the new object");
  if (!prompt.includes(subject)) throw new Error(`the prompt does not contain the subject "${subject}"`);
  const method = value("method") as MethodName;
  const layers = value("layers").split(",").filter((x) => x.trim() !== "").map(Number);
  const mc = methodConfig(m, method, {
    layers: layers.length ? layers : undefined,
    vNumGradSteps: value("v-steps") ? Number(value("v-steps")) : undefined,
  });
  const probes = [
    { label: "the fact", text: prompt },
    { label: "a paraphrase", text: value("paraphrase") },
    { label: "a neighbour", text: value("neighbour") },
  ].filter((p) => p.text !== "");
  const step = (s: string) => $("edit-step").textContent = s;
  const progress = $<HTMLProgressElement>("edit-progress");
  const wanted = statsLayers(mc);
  const missing = wanted.filter((l) => !statsMemo.has(l));
  const statsSource: string[] = [];
  if (missing.length > 0) {
    step(`key statistics of layers ${missing.join(",")}`);
    const corpus = `${dir}/corpus.txt`;
    const got = await keyStats(m, tok, {
      corpus,
      layers: missing,
      samples: statsHparams(m.config).samples,
      cacheDir: null,
      log: (line) => {
        statsSource.push(line);
        step(line);
      },
      onProgress: (done, total) => {
        progress.hidden = false;
        progress.max = total;
        progress.value = done;
      },
    });
    for (const [l, s] of got) statsMemo.set(l, s);
  }
  step(`computing the ${method.toUpperCase()} edit`);
  const request = { prompt: prompt.replace(subject, "{}"), subject, target: targetNew };
  const [e] = await computeEdits(m, tok, mc, [request], new Map(wanted.map((l) => [l, statsMemo.get(l)!])), {
    startWords: await templateStartWords(tok, `${dir}/corpus.txt`),
  });
  const before = await probeAnswers(m, tok, probes, targetTrue, targetNew);
  applied = await applyEdit(m, e);
  lastEdit = e;
  const results = probeResults(probes, before, await probeAnswers(m, tok, probes, targetTrue, targetNew));
  const layersEdited = editedLayers(mc);
  locus.results.edit = { method, layers: layersEdited, request, targetTrue, statsSource, probes: results };
  locus.results.undo = undefined;
  progress.hidden = true;
  step("");
  const top3 = (ps: Prediction[]) =>
    ps.map((p) => `${escapeHtml(p.token.trim())} ${percent(p.prob)}`).join(", ");
  $("edit-out").innerHTML =
    `<p>${method.toUpperCase()} changed the MLP output weights of layer${
      layersEdited.length > 1 ? "s" : ""
    } ${
      layersEdited.join(",")
    }.</p><table><tr><th></th><th>prompt</th><th>object</th><th>before</th><th></th>` +
    `<th>after</th><th></th><th>top answers after</th></tr>${
      results.map((r) =>
        `<tr><td rowspan="2">${r.label}</td><td rowspan="2">${escapeHtml(r.text)}</td><td>${
          escapeHtml(targetTrue)
        }</td>` +
        `<td class="num">${percent(r.pTrue[0])}</td><td>${bar(r.pTrue[0])}</td><td class="num">${
          percent(r.pTrue[1])
        }</td>` +
        `<td>${bar(r.pTrue[1])}</td><td rowspan="2">${top3(r.after)}</td></tr><tr><td>${
          escapeHtml(targetNew)
        }</td>` +
        `<td class="num">${percent(r.pNew[0])}</td><td>${bar(r.pNew[0], "new")}</td><td class="num">${
          percent(r.pNew[1])
        }</td><td>${bar(r.pNew[1], "new")}</td></tr>`
      ).join("")
    }</table>`;
  return `Edited "${prompt}" to answer ${targetNew}`;
}

async function undo(): Promise<string> {
  const before = locus.results.edit!.probes[0].before;
  applied!.undo();
  applied = null;
  const top = await predictNext(model!, tok.encode(locus.results.edit!.probes[0].text), 3, tok);
  const identical = top.every((p, i) => p.id === before[i].id && p.prob === before[i].prob);
  locus.results.undo = { identical, top };
  $("edit-out").insertAdjacentHTML(
    "beforeend",
    `<p>Undone: the original weights are back. ${
      identical
        ? "The answers are identical to before the edit, to the last bit."
        : "WARNING: the answers differ from before the edit."
    }</p>`,
  );
  return "Undone";
}

function download(): Promise<string> {
  const { tensors, metadata } = editTensors(lastEdit!);
  const blob = new Blob(encodeSafetensors("edit.safetensors", tensors, metadata) as BlobPart[], {
    type: "application/octet-stream",
  });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${lastEdit!.method}-edit.safetensors`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  return Promise.resolve(
    `Downloaded the edit (${blob.size} bytes; \`./locus task edit --load\` style files, see edit.ts)`,
  );
}

// ------------------------------------------------------------------------------------------ start

function noWebGpu(why: string): void {
  const box = $<HTMLDivElement>("nogpu");
  box.style.display = "block";
  box.innerHTML =
    `<b>${escapeHtml(why)}</b><br>Locus needs WebGPU. It is on by default in Chrome and Edge 113+ on ` +
    `Windows, macOS and ChromeOS, and in Safari 26. On Linux start Chrome with <code>--enable-unsafe-webgpu</code> ` +
    `(and <code>--enable-features=Vulkan</code>), or turn on chrome://flags/#enable-unsafe-webgpu; in Firefox ` +
    `set dom.webgpu.enabled in about:config. The page must come from https:// or localhost.`;
  status("No WebGPU: nothing can run here.", true);
  locus.error = why;
  locus.finished++;
  locus.busy = false;
}

async function start(): Promise<void> {
  if (!("gpu" in navigator)) {
    return noWebGpu("This browser has no WebGPU (navigator.gpu is missing).");
  }
  setIo(browserIo(LOCUS_SHADERS));
  try {
    gpu = await Gpu.open();
  } catch (e) {
    return noWebGpu(
      e instanceof NoAdapterError ? "WebGPU is there but gives no adapter." : (e as Error).message,
    );
  }
  await task("load", () => loadModel(EMBEDDED));
  $<HTMLSelectElement>("case").addEventListener(
    "change",
    (e) => fillCase(Number((e.target as HTMLSelectElement).value)),
  );
  $("method").addEventListener("change", () => {
    const mc = methodConfig(model!, value("method") as MethodName);
    $("layers").value = editedLayers(mc).join(",");
  });
  $("predict").addEventListener("click", () => task("Predicting", predict));
  $("trace").addEventListener("click", () => task("Tracing", trace));
  $("edit").addEventListener("click", () => task("Editing", edit));
  $("undo").addEventListener("click", () => task("Undoing", undo));
  $("download").addEventListener("click", () => task("Downloading", download));
  const drop = $<HTMLDivElement>("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    await loadDropped(await droppedFiles(e.dataTransfer!.items));
  });
  $("folder").addEventListener("change", async (e) => {
    const list = [...((e.target as HTMLInputElement).files ?? [])];
    // webkitRelativePath is "<folder>/<path>": the folder's own name is dropped.
    await loadDropped({
      files: new Map(
        list.map((f) => [`${DROPPED}/${f.webkitRelativePath.split("/").slice(1).join("/")}`, f]),
      ),
      name: list[0]?.webkitRelativePath.split("/")[0] ?? "(no files)",
    });
  });
}

start();
