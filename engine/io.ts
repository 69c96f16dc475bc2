// The engine's one reading boundary: model files (config, weights, tokenizer, cached statistics),
// shader sources, the runtime's WebGPU backend and the memory a software adapter shares with the CPU.
// Everything under engine/ reads through io() so the same engine runs in Deno (files on disk) and in a
// web page (files fetched from the page's server or dropped by the user; shaders bundled into the build
// by web/build.ts). Writing files stays Deno-only (engine/files.ts); the page downloads bytes instead.

/** Random access to one file's bytes (safetensors reads one tensor at a time, never the whole file). */
export interface ByteReader {
  readonly size: number;
  /** Bytes [offset, offset + length), fewer only when the file ends first. */
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): void;
}

export interface Io {
  /** "deno" or "browser", for messages. */
  readonly runtime: string;
  /** A file's text, or null when it does not exist. */
  readText(path: string): Promise<string | null>;
  /** Opens a regular file for reading, or returns null when it does not exist. */
  open(path: string): Promise<ByteReader | null>;
  /** The WGSL source of shaders/`file`. */
  shader(file: string): string;
  /** The WebGPU backend requested before the adapter is: "gl"/"vulkan"/"default" in Deno, "browser". */
  chooseBackend(): { backend: string; userChosen: boolean };
  /** Bytes of machine memory (what a software adapter allocates from), or null when unknown. */
  memoryBytes(): number | null;
}

/** Folder + file name with one separator (model folders are given as plain strings in both runtimes). */
export function joinPath(dir: string, name: string): string {
  return dir === "" ? name : `${dir.replace(/\/+$/, "")}/${name}`;
}

/** The last component of a path ("weights/locus-kb" -> "locus-kb"). */
export function baseName(path: string): string {
  const parts = path.replace(/\/+$/, "").split("/");
  return parts[parts.length - 1];
}

/**
 * The WebGPU backend Deno will use, as named by DENO_WEBGPU_BACKEND ("default": Deno's choice).
 * Linux with no GPU device node has only Mesa's CPU drivers, and of those the GL one (llvmpipe) runs
 * Locus's kernels faster than the Vulkan one (lavapipe): 126 vs 234 ms for GPT-2 small's 16-token
 * forward (bench/RESULTS.md). So there, with Mesa's EGL present, Gpu.open sets the variable to "gl"
 * unless the user set it (Deno reads it once, at the first requestAdapter).
 */
export function preferredBackend(): string {
  const chosen = Deno.env.get("DENO_WEBGPU_BACKEND");
  if (chosen) return chosen;
  if (Deno.build.os !== "linux") return "default";
  const mesaEgl = folderNames("/usr/share/glvnd/egl_vendor.d").some((n) => n.endsWith("_mesa.json"));
  return !hasGpuDeviceNode() && mesaEgl ? "gl" : "default";
}

/** The names in a folder, or none when it cannot be read (or does not exist). */
export function folderNames(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch {
    return [];
  }
}

/**
 * Whether this (Linux) machine has a GPU device node: a DRM render node, NVIDIA's, WSL's dxg or AMD's
 * kfd. Without one, WebGPU has only Mesa's CPU drivers (`./locus`'s has_gpu asks the same).
 */
export function hasGpuDeviceNode(): boolean {
  return folderNames("/dev/dri").some((n) => n.startsWith("renderD")) ||
    folderNames("/dev").some((n) => /^nvidia\d+$/.test(n) || n === "dxg" || n === "kfd");
}

const denoIo: Io = {
  runtime: "deno",
  async readText(path) {
    try {
      return await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  },
  async open(path) {
    let handle: Deno.FsFile;
    try {
      handle = await Deno.open(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
    const stat = await handle.stat();
    if (!stat.isFile) {
      handle.close();
      throw new Error(`${path} is not a regular file`);
    }
    return {
      size: stat.size,
      async read(offset, length) {
        const out = new Uint8Array(length);
        await handle.seek(offset, Deno.SeekMode.Start);
        let got = 0;
        while (got < length) {
          const n = await handle.read(out.subarray(got));
          if (n === null) break;
          got += n;
        }
        return got === length ? out : out.slice(0, got);
      },
      close: () => handle.close(),
    };
  },
  shader: (file) => Deno.readTextFileSync(new URL(`../shaders/${file}`, import.meta.url)),
  chooseBackend() {
    const userChosen = Deno.env.get("DENO_WEBGPU_BACKEND") !== undefined;
    const backend = preferredBackend();
    if (backend !== "default") Deno.env.set("DENO_WEBGPU_BACKEND", backend);
    return { backend, userChosen };
  },
  memoryBytes: () => Deno.systemMemoryInfo().total,
};

/** Reads a Blob (a fetched file or one the user dropped) by slices. */
function blobReader(blob: Blob): ByteReader {
  return {
    size: blob.size,
    read: async (offset, length) => new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer()),
    close: () => {},
  };
}

/**
 * The page's files: `dropped` (path -> File, from a folder the user dropped) first, otherwise fetched
 * relative to the page (a 404 is "does not exist"). `shaders` maps shaders/*.wgsl names to their text.
 */
export function browserIo(shaders: Record<string, string>, dropped: Map<string, Blob> = new Map()): Io {
  const blobs = new Map([...dropped].map(([k, v]) => [k, Promise.resolve<Blob | null>(v)]));
  const blobOf = (path: string) => {
    let b = blobs.get(path);
    if (!b) {
      b = fetch(path).then((r) => {
        if (r.status === 404) return null;
        if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${r.statusText}`);
        return r.blob();
      });
      blobs.set(path, b);
    }
    return b;
  };
  const memory = (navigator as { deviceMemory?: number }).deviceMemory;
  return {
    runtime: "browser",
    readText: async (path) => (await blobOf(path))?.text() ?? null,
    open: async (path) => {
      const blob = await blobOf(path);
      return blob ? blobReader(blob) : null;
    },
    shader(file) {
      const text = shaders[file];
      if (text === undefined) {
        throw new Error(`shader ${file} is not in this build (web/build.ts bundles shaders/)`);
      }
      return text;
    },
    chooseBackend: () => ({ backend: "browser", userChosen: false }),
    // navigator.deviceMemory is rounded and capped (8 GiB in Chromium), so it is a lower bound.
    memoryBytes: () => (memory ? memory * 2 ** 30 : null),
  };
}

let current: Io | null = typeof Deno === "undefined" ? null : denoIo;

/** The runtime's I/O (Deno's by default; a page installs browserIo with setIo first). */
export function io(): Io {
  if (!current) throw new Error("no I/O installed: a web page must call setIo(browserIo(...)) first");
  return current;
}

export function setIo(x: Io): void {
  current = x;
}
