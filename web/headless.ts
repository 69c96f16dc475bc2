// The web page in headless Chromium, driven through its buttons: used by tests/web_test.ts (numbers
// against the Deno engine) and by `./locus run -A web/headless.ts --screenshots docs` (the README's images).
// Chromium is Debian's /usr/bin/chromium (.ci/run installs it) with WebGPU on; without a GPU its adapter is
// SwiftShader. The machine may have no internet, so every background fetch is switched off.
import { parseArgs } from "node:util";
import { runMain } from "../engine/main.ts";
import { buildWeb, ROOT, serveWeb } from "./build.ts";

export const CHROMIUM = "/usr/bin/chromium";
// Imported by a computed specifier so that its types stay out of the type check: they declare the DOM's
// globals, which clash with Deno's own Event types in the engine.
const PUPPETEER = "npm:puppeteer-core@24";

/** Minimal view of a puppeteer page: what the test and the screenshots use. */
interface Tab {
  click(selector: string): Promise<void>;
  evaluate(expression: string): Promise<unknown>;
  waitForFunction(expression: string, o: { timeout: number; polling: number }): Promise<unknown>;
  setViewport(v: { width: number; height: number }): Promise<void>;
  screenshot(o: { path: string; fullPage?: boolean }): Promise<unknown>;
  on(event: "pageerror", f: (e: Error) => void): void;
  $(selector: string): Promise<{ uploadFile(...paths: string[]): Promise<void> } | null>;
}

export interface HeadlessPage {
  /** Sets form fields by id, then waits for nothing (the page reads them when a button is pressed). */
  fill(values: Record<string, string | number>): Promise<void>;
  /** Presses a button and waits until the page is idle again; throws the page's error if it shows one. */
  press(button: string): Promise<void>;
  /** Chooses a model folder through the page's folder input (as a user does) and waits for it to load. */
  chooseFolder(dir: string): Promise<void>;
  /** The page's raw results (globalThis.locus.results, see web/app.ts). */
  results<T>(): Promise<T>;
  screenshot(path: string, width?: number, height?: number): Promise<void>;
  /** Presses a button that downloads a file and returns the file's path once it is complete. */
  download(button: string, name: string): Promise<string>;
  /** Uncaught errors of the page's scripts so far. */
  errors: string[];
  close(): Promise<void>;
}

/**
 * Builds and serves the page, starts Chromium on it and waits until the embedded model is loaded.
 * `timeoutMs` bounds each button's work (the page's default settings on a loaded software adapter
 * take minutes for an edit).
 */
export async function openHeadless(timeoutMs = 280_000): Promise<HeadlessPage> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `${CHROMIUM} is missing; install it with: apt-get install -y --no-install-recommends chromium`,
    );
  }
  await buildWeb();
  const listening = Promise.withResolvers<number>();
  const server = serveWeb(0, (p) => listening.resolve(p));
  const port = await listening.promise;
  const profile = await Deno.makeTempDir();
  const { default: puppeteer } = await import(PUPPETEER);
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    protocolTimeout: timeoutMs + 20_000,
    args: [
      "--headless=new",
      "--no-sandbox",
      "--enable-unsafe-webgpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      `--user-data-dir=${profile}`,
    ],
  });
  const downloads = await Deno.makeTempDir();
  const close = async () => {
    await browser.close();
    await server.shutdown();
    await Deno.remove(profile, { recursive: true });
    await Deno.remove(downloads, { recursive: true });
  };
  try {
    const tab: Tab = await browser.newPage();
    const errors: string[] = [];
    tab.on("pageerror", (e) => errors.push(String(e)));
    // The page keeps its state in globalThis.locus (web/app.ts): busy while a button's work runs,
    // `finished` counting the work done. `after` runs an action that starts work and waits until that
    // work is done (even when it ends before the next poll).
    const idle = async (finishedBefore = 0) => {
      await tab.waitForFunction(
        `globalThis.locus !== undefined && !globalThis.locus.busy && globalThis.locus.finished > ${finishedBefore}`,
        { timeout: timeoutMs, polling: 100 },
      );
      const error = await tab.evaluate("globalThis.locus.error");
      if (error !== null) throw new Error(`the page reports an error: ${error}`);
    };
    const after = async (action: () => Promise<void>) => {
      const finished = await tab.evaluate("globalThis.locus.finished") as number;
      await action();
      await idle(finished);
    };
    const raw = tab as unknown as {
      goto(url: string): Promise<void>;
      createCDPSession(): Promise<{ send(method: string, params: unknown): Promise<unknown> }>;
    };
    await (await raw.createCDPSession()).send("Browser.setDownloadBehavior", {
      behavior: "allow",
      downloadPath: downloads,
    });
    await raw.goto(`http://127.0.0.1:${port}/`);
    await idle();
    return {
      errors,
      fill: async (values) => {
        for (const [id, v] of Object.entries(values)) {
          await tab.evaluate(
            `document.getElementById(${JSON.stringify(id)}).value = ${JSON.stringify(String(v))}`,
          );
        }
      },
      press: (button) => after(() => tab.click(`#${button}`)),
      chooseFolder: async (dir) => {
        const input = await tab.$("#folder");
        if (!input) throw new Error("the page has no #folder input");
        // Chromium lists a folder given to a webkitdirectory input as a user's choice would.
        await after(() => input.uploadFile(dir));
      },
      download: async (button, name) => {
        await after(() => tab.click(`#${button}`));
        // Chromium writes NAME.crdownload and renames it to NAME when the download is complete.
        for (let waited = 0; waited < 30_000; waited += 100) {
          try {
            await Deno.stat(`${downloads}/${name}`);
            return `${downloads}/${name}`;
          } catch {
            await new Promise((r) => setTimeout(r, 100));
          }
        }
        throw new Error(`no download ${name} within 30 s`);
      },
      results: async <T>() =>
        JSON.parse(await tab.evaluate("JSON.stringify(globalThis.locus.results)") as string) as T,
      screenshot: async (path, width = 1100, height = 1600) => {
        await tab.setViewport({ width, height });
        await tab.screenshot({ path, fullPage: true });
      },
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/**
 * A Hugging Face folder `parent/<fixture>` made of a transformers-made family fixture's model files
 * (tests/fixtures/families/<fixture>, not its expected outputs) and the Llama 2-format tokenizer.json
 * of tests/fixtures/web: what tests/web_test.ts and the screenshots choose through the folder input.
 */
export async function familyFolder(parent: string, fixture: string): Promise<string> {
  const from = `${ROOT}tests/fixtures/families/${fixture}`, dir = `${parent}/${fixture}`;
  await Deno.mkdir(dir);
  for await (const e of Deno.readDir(from)) {
    if (e.name !== "expected.json") await Deno.copyFile(`${from}/${e.name}`, `${dir}/${e.name}`);
  }
  await Deno.copyFile(`${ROOT}tests/fixtures/web/tokenizer.json`, `${dir}/tokenizer.json`);
  return dir;
}

/** Screenshots into --screenshots DIR: web-trace.png after predict + trace, web-edit.png after an edit
 *  (the page's default settings), web-folder.png after predicting on a chosen folder (a Llama fixture);
 *  --only trace,edit,folder takes some of them. */
async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { screenshots: { type: "string", default: "docs" }, only: { type: "string" } },
  });
  const out = values.screenshots;
  const shots = new Set((values.only ?? "trace,edit,folder").split(","));
  const unknown = [...shots].filter((s) => !["trace", "edit", "folder"].includes(s));
  if (unknown.length > 0) throw new Error(`--only: unknown screenshots ${unknown.join(",")}`);
  const folders = await Deno.makeTempDir();
  const page = await openHeadless(1_800_000);
  try {
    if (shots.has("trace") || shots.has("edit")) {
      await page.press("predict");
      await page.press("trace");
      if (shots.has("trace")) await page.screenshot(`${out}/web-trace.png`);
    }
    if (shots.has("edit")) {
      await page.press("edit");
      await page.screenshot(`${out}/web-edit.png`);
    }
    if (shots.has("folder")) {
      await page.chooseFolder(await familyFolder(folders, "llama_bf16"));
      await page.fill({ prompt: "the miller sells bread in" });
      await page.press("predict");
      await page.screenshot(`${out}/web-folder.png`);
    }
  } finally {
    await page.close();
    await Deno.remove(folders, { recursive: true });
  }
  console.log(`wrote ${[...shots].map((s) => `${out}/web-${s}.png`).join(", ")}`);
  return 0;
}

if (import.meta.main) runMain("web-screenshots", main);
