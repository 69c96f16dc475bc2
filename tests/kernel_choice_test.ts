// engine/kernel_choice.ts, the one place kernel variants are chosen, on the adapter infos that Deno and
// the browsers report: the software ones recognised by flag or by name (llvmpipe through GL keeps its
// 8x16 texture blocks and transposed mirrors, lavapipe gets 4x16, SwiftShader/WARP register blocks on buffers), GPUs on
// workgroup-memory tiles sized to the limits, f16 weights read as f16 where "shader-f16" is there;
// every tile set chosen computes correct products on this machine's adapter; and the engine's Gpu
// uses exactly the choice for its own adapter.
import * as assert from "node:assert/strict";
import { adapterFacts, getGpu } from "../engine/gpu.ts";
import {
  type AdapterFacts,
  attentionSaves,
  chooseKernels,
  evenBlockRows,
  GPU_SPLIT_K,
  type MatmulTiles,
  PROBS_BYTES_MAX,
} from "../engine/kernel_choice.ts";
import { matmul, matmulTiles, setMatmulTiles } from "../engine/ops.ts";
import { matmulRef } from "./reference.ts";
import { assertClose, GPU_TILES, randomArray } from "./util.ts";

/** WebGPU's default limits, which every adapter supports at least. */
const DEFAULT_LIMITS = {
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
};
const BIG_LIMITS = {
  maxComputeWorkgroupStorageSize: 32768,
  maxComputeInvocationsPerWorkgroup: 1024,
  maxComputeWorkgroupSizeX: 1024,
  maxComputeWorkgroupSizeY: 1024,
};

// The first three as the runtimes reported them on a machine without a GPU (Deno 2 with Mesa 22,
// Chromium 156; features abridged); the GPUs as their runtimes fill GPUAdapterInfo (Deno: PCI ids in
// decimal and the driver's device name; Chrome: vendor and architecture only; Safari: "apple" and a
// Metal family, no isFallbackAdapter; Firefox: no names), and limits at the edges of the choice.
const ADAPTERS: Record<string, AdapterFacts> = {
  "Deno, Mesa llvmpipe through GL": {
    vendor: "65541",
    architecture: "",
    device: "0",
    description: "llvmpipe (LLVM 15.0.6, 256 bits)",
    isFallbackAdapter: true,
    backend: "gl",
    limits: BIG_LIMITS,
    features: ["depth-clip-control", "indirect-first-instance", "timestamp-query"],
  },
  "Deno, Mesa lavapipe through Vulkan": {
    vendor: "65541",
    architecture: "",
    device: "0",
    description: "llvmpipe (LLVM 15.0.6, 256 bits)",
    isFallbackAdapter: true,
    backend: "vulkan",
    limits: BIG_LIMITS,
    features: ["float32-filterable", "shader-f16", "timestamp-query"],
  },
  "Chrome, SwiftShader": {
    vendor: "google",
    architecture: "swiftshader",
    device: "",
    description: "",
    isFallbackAdapter: true,
    backend: "browser",
    limits: {
      ...BIG_LIMITS,
      maxComputeInvocationsPerWorkgroup: 256,
      maxComputeWorkgroupSizeX: 256,
      maxComputeWorkgroupSizeY: 256,
    },
    features: ["float32-filterable", "subgroups", "timestamp-query"],
  },
  "a browser naming lavapipe only in the description": {
    vendor: "",
    architecture: "",
    device: "",
    description: "llvmpipe (LLVM 19.1.7, 256 bits)",
    backend: "browser",
    limits: DEFAULT_LIMITS,
    features: [],
  },
  "Chrome, WARP (Windows' software rasterizer), not flagged": {
    vendor: "microsoft",
    architecture: "",
    device: "",
    description: "Microsoft Basic Render Driver",
    isFallbackAdapter: false,
    backend: "browser",
    limits: DEFAULT_LIMITS,
    features: ["shader-f16"],
  },
  "an unnamed fallback adapter": {
    vendor: "",
    architecture: "",
    device: "",
    description: "",
    isFallbackAdapter: true,
    backend: "browser",
    limits: DEFAULT_LIMITS,
    features: [],
  },
  "Deno, NVIDIA through Vulkan": {
    vendor: "4318",
    architecture: "",
    device: "8708",
    description: "NVIDIA GeForce RTX 3090",
    isFallbackAdapter: false,
    backend: "default",
    limits: BIG_LIMITS,
    features: ["shader-f16", "subgroups", "timestamp-query"],
  },
  "Chrome, NVIDIA": {
    vendor: "nvidia",
    architecture: "ampere",
    device: "",
    description: "",
    isFallbackAdapter: false,
    backend: "browser",
    limits: { ...BIG_LIMITS, maxComputeInvocationsPerWorkgroup: 1024 },
    features: ["shader-f16", "subgroups", "float32-filterable"],
  },
  "Safari, Apple silicon": {
    vendor: "apple",
    architecture: "metal-3",
    device: "",
    description: "",
    backend: "browser",
    limits: BIG_LIMITS,
    features: ["shader-f16", "float32-filterable"],
  },
  "Firefox, a GPU it does not name": {
    vendor: "",
    architecture: "",
    device: "",
    description: "",
    backend: "browser",
    limits: DEFAULT_LIMITS,
    features: [],
  },
  "a compatibility-mode GPU (128 invocations)": {
    vendor: "qualcomm",
    architecture: "adreno-6xx",
    device: "",
    description: "",
    isFallbackAdapter: false,
    backend: "browser",
    limits: { ...DEFAULT_LIMITS, maxComputeInvocationsPerWorkgroup: 128 },
    features: [],
  },
  "a GPU with 2 KiB of workgroup memory": {
    vendor: "arm",
    architecture: "valhall",
    device: "",
    description: "",
    isFallbackAdapter: false,
    backend: "browser",
    limits: { ...DEFAULT_LIMITS, maxComputeWorkgroupStorageSize: 2048 },
    features: [],
  },
};

const SOFTWARE = { TM: 8, TN: 8, WG_X: 1, WG_Y: 8 };
const EXPECTED: Record<string, [string | null, MatmulTiles]> = {
  // The fastest variants on llvmpipe-GL (bench/kernels.ts): kept exactly.
  "Deno, Mesa llvmpipe through GL": ["llvmpipe", {
    ...SOFTWARE,
    texture: { TM: 8, TN: 16, WG: 8, transposed: { TM: 8, TN: 16, WG: 8 } },
  }],
  "Deno, Mesa lavapipe through Vulkan": ["lavapipe", { ...SOFTWARE, texture: { TM: 4, TN: 16, WG: 8 } }],
  // SwiftShader compiles the texture kernels slowly: weights from buffers there.
  "Chrome, SwiftShader": ["swiftshader", SOFTWARE],
  "a browser naming lavapipe only in the description": ["lavapipe", {
    ...SOFTWARE,
    texture: { TM: 4, TN: 16, WG: 8 },
  }],
  "Chrome, WARP (Windows' software rasterizer), not flagged": ["warp", SOFTWARE],
  "an unnamed fallback adapter": ["unnamed", SOFTWARE],
  "Deno, NVIDIA through Vulkan": [null, GPU_TILES],
  "Chrome, NVIDIA": [null, GPU_TILES],
  "Safari, Apple silicon": [null, GPU_TILES],
  "Firefox, a GPU it does not name": [null, GPU_TILES],
  "a compatibility-mode GPU (128 invocations)": [null, {
    TM: 8,
    TN: 8,
    WG_X: 8,
    WG_Y: 8,
    strategy: "workgroup",
    BK: 8,
    splitK: GPU_SPLIT_K,
  }],
  // 64x64 tiles need 4 KiB: register blocks, without texture mirrors (a GPU reads buffers well).
  "a GPU with 2 KiB of workgroup memory": [null, SOFTWARE],
};

Deno.test("evenBlockRows spreads rows evenly over the fewest blocks of at most `most` rows", () => {
  // [rows, most, rows per block]: 6 rows at most 4 make 2 blocks, of 3 each.
  for (
    const [rows, most, want] of [
      [6, 4, 3],
      [5, 4, 3],
      [3, 4, 3],
      [4, 4, 4],
      [8, 4, 4],
      [9, 4, 3],
      [20, 4, 4],
      [1, 4, 1],
      [7, 1, 1],
    ]
  ) {
    assert.equal(evenBlockRows(rows, most), want, `${rows} rows, at most ${most}`);
    assert.equal(Math.ceil(rows / want), Math.ceil(rows / Math.min(most, rows)), "the same number of blocks");
  }
});

Deno.test("chooseKernels: software adapters by flag or name, GPU tiles by limits, for each runtime's adapter info", () => {
  assert.deepEqual(Object.keys(EXPECTED).sort(), Object.keys(ADAPTERS).sort());
  for (const [name, facts] of Object.entries(ADAPTERS)) {
    const [software, tiles] = EXPECTED[name];
    const got = chooseKernels(facts);
    assert.equal(got.software, software, `${name}: software`);
    assert.deepEqual(got.matmul, tiles, `${name}: matmul tiles`);
    assert.equal(got.nativeF16, facts.features.includes("shader-f16"), `${name}: f16 weights read as f16`);
    // Row kernels: one invocation per row on CPUs, one workgroup per row on every GPU (all of these
    // allow 64 invocations and 256 bytes of workgroup memory).
    assert.equal(got.rows, software === null ? "workgroup" : "invocation", `${name}: row kernels`);
    // Attention: an invocation shares its key and gradient texels among more rows and columns on CPUs.
    assert.deepEqual(
      got.attention,
      software === null
        ? { queryRows: 1, backwardBlock: { TM: 8, TN: 4 } }
        : { queryRows: 4, backwardBlock: { TM: 4, TN: 16 } },
      `${name}: attention kernels`,
    );
    assert.equal(got.virtualScoreRows, software === null ? 1 : 4, `${name}: virtual-edit score rows`);
    // The choice never exceeds the adapter's limits.
    const t = got.matmul;
    assert.ok(t.WG_X * t.WG_Y <= facts.limits.maxComputeInvocationsPerWorkgroup, name);
    if (t.strategy === "workgroup") {
      const bytes = 4 * (t.BK ?? 8) * (t.TM * t.WG_X + t.TN * t.WG_Y);
      assert.ok(bytes <= facts.limits.maxComputeWorkgroupStorageSize, `${name}: ${bytes} bytes`);
    }
  }
});

Deno.test("the engine's Gpu runs the choice for its own adapter", async () => {
  const gpu = await getGpu();
  const choice = chooseKernels(adapterFacts(gpu.adapter, gpu.info.backend));
  assert.deepEqual(gpu.kernels, choice);
  assert.equal(gpu.info.software, choice.software);
  assert.equal(matmulTiles(gpu), gpu.kernels.matmul);
  assert.equal(gpu.device.features.has("shader-f16"), choice.nativeF16, "the device has the features chosen");
});

Deno.test("every tile set chosen above computes correct products here (weights from buffers and textures)", async () => {
  const gpu = await getGpu();
  const distinct = new Map(Object.values(EXPECTED).map(([, t]) => [JSON.stringify(t), t]));
  // K = 72 for B [K, N] stored (no uniform windows: buffer kernels), 128 for B [N, K] (windows and
  // textures, the transposed mirror where the tiles have one).
  const saved = matmulTiles(gpu);
  try {
    for (const [transB, K] of [[false, 72], [true, 128]] as const) {
      const [M, N] = [20, 128];
      const a = randomArray(M * K, 1), b = randomArray(K * N, 2), bias = randomArray(N, 3);
      const ref = matmulRef(a, b, M, N, K, { transA: false, transB, bias });
      for (const [key, tiles] of distinct) {
        setMatmulTiles(gpu, tiles);
        const out = matmul(gpu, gpu.tensor([M * K], a), gpu.tensor([K * N], b), M, N, K, {
          transB,
          bias: gpu.tensor([N], bias),
          weight: true,
        });
        assertClose(await out.read(), ref, 1e-4 * Math.sqrt(K), `${key} transB=${transB}`);
      }
    }
  } finally {
    setMatmulTiles(gpu, saved);
  }
});

Deno.test("attentionSaves: the adapter's choice, or the log-sum-exp once probabilities pass the threshold or a binding", () => {
  const binding = 128 * 2 ** 20;
  // GPT-2 small's 12 heads: 1 x 12 x 1024 x 1024 floats = 48 MiB, under PROBS_BYTES_MAX.
  assert.equal(attentionSaves("probs", 1, 12, 1024, 1024, binding), "probs");
  assert.equal(attentionSaves("lse", 1, 12, 1024, 1024, binding), "lse");
  // One float more than the threshold, and a prompt over it.
  const rows = PROBS_BYTES_MAX / 4 / (2 * 8 * 64);
  assert.equal(attentionSaves("probs", 2, 8, rows, 64, binding), "probs");
  assert.equal(attentionSaves("probs", 2, 8, rows, 65, binding), "lse");
  assert.equal(attentionSaves("probs", 1, 32, 2048, 2048, binding), "lse");
  // A binding smaller than the threshold decides first.
  assert.equal(attentionSaves("probs", 1, 12, 512, 512, 8 * 2 ** 20), "lse");
  assert.equal(attentionSaves("probs", 1, 12, 512, 512, 12 * 2 ** 20), "probs");
});
