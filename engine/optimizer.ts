// Adam / AdamW on the GPU, global-norm gradient clipping without a readback, L-infinity
// projection for constrained fine-tuning, and gradient zeroing (kernels in shaders/optimizer.wgsl).
//
// A step records, in one command stream: the squared global gradient norm (engine/backward_ops.ts
// sumOfSquares, a fixed-order reduction), then one `adam` kernel per parameter that reads that norm
// to scale its gradient. Nothing is read back unless gradNorm() or saveState() is called. A gradient
// backward left as its factors (engine/autograd.ts FactoredGradient) is formed inside its parameter's
// update (shaders/adam_factored_block.wgsl).
import { addFactoredGradient, type FactoredGradient } from "./autograd.ts";
import { Gpu, Tensor, uniforms } from "./gpu.ts";
import { need, sumOfSquares } from "./backward_ops.ts";
import { elementwise, fitsWholeMirror, matmulTiles } from "./ops.ts";

/** One parameter an Adam optimises. */
export interface AdamParam {
  /** The parameter's name, recorded in saved states and checked when they are loaded. */
  name: string;
  /** The parameter's values, updated in place by each step. */
  tensor: Tensor;
  /** Number of values to optimise (the first `size` of the tensor). */
  size: number;
  /** Overrides the optimizer's weight decay for this parameter (e.g. 0 for biases and LayerNorm). */
  weightDecay?: number;
  /**
   * After each step the parameter is clamped into [center - radius, center + radius], elementwise (an
   * L-infinity ball: constrained fine-tuning), in the update's own pass: projectLinf's bits, one pass
   * over the parameter fewer.
   */
  linf?: {
    center: Tensor;
    radius: number;
    /**
     * The parameter is this many equal copies (GroupedParams: FT-L's weight copies) around one center:
     * `center` holds size / copies values, each copy's. Only with factored gradients (Adam.step then
     * reads it from its texture mirror where the adapter's matmuls read textures, else from its buffer).
     */
    copies?: number;
  };
}

export interface AdamOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay (AdamW); 0 = plain Adam. */
  weightDecay?: number;
  /** Rescale all gradients so their global L2 norm is at most clipNorm (PyTorch clip_grad_norm_). */
  clipNorm?: number;
  /** Compute the gradients' global norm at every step, for gradNorm() (default true). Without clipping,
   *  false skips that reduction. */
  trackNorm?: boolean;
}

/** Optimizer state for checkpoints: step count and the moments, one array per parameter (in order). */
export interface AdamState {
  /** Steps taken so far (the bias corrections' t). */
  step: number;
  /** The parameters' names, in order. */
  names: string[];
  /** First moments, one [size] array per parameter. */
  m: Float32Array[];
  /** Second moments, one [size] array per parameter. */
  v: Float32Array[];
}

/** Adam / AdamW over chosen parameters, with global-norm clipping on the GPU and a savable state. */
export class Adam {
  /** Learning rate of the next step; change it between steps for a schedule. */
  lr: number;
  /** First moment decay (default 0.9). */
  readonly beta1: number;
  /** Second moment decay (default 0.999). */
  readonly beta2: number;
  /** Added to sqrt(v) in the denominator (default 1e-8). */
  readonly eps: number;
  /** Decoupled weight decay (AdamW); 0 = plain Adam. */
  readonly weightDecay: number;
  /** Global L2 norm the gradients are clipped to; undefined: no clipping. */
  readonly clipNorm: number | undefined;
  /** Whether each step computes the gradients' global norm (clipping, or AdamOptions.trackNorm). */
  readonly computesNorm: boolean;
  /** Steps taken so far (Adam's t; bias corrections use t+1 on the next step). */
  stepCount = 0;
  /** [1] squared global norm of the gradients given to the last step (before clipping). */
  readonly normSq: Tensor;
  private readonly m: Tensor[];
  private readonly v: Tensor[];

  /** Zeroed moments for every parameter of `params`, optimised with the options `o`. */
  constructor(readonly gpu: Gpu, readonly params: AdamParam[], o: AdamOptions) {
    this.lr = o.lr;
    this.beta1 = o.beta1 ?? 0.9;
    this.beta2 = o.beta2 ?? 0.999;
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? 0;
    this.clipNorm = o.clipNorm;
    this.computesNorm = o.clipNorm !== undefined || (o.trackNorm ?? true);
    if (!(this.lr >= 0)) throw new Error(`Adam: lr must be >= 0, got ${this.lr}`);
    for (const [name, b] of [["beta1", this.beta1], ["beta2", this.beta2]] as const) {
      if (!(b >= 0 && b < 1)) throw new Error(`Adam: ${name} must be in [0, 1), got ${b}`);
    }
    if (!(this.eps > 0)) throw new Error(`Adam: eps must be > 0, got ${this.eps}`);
    if (this.clipNorm !== undefined && !(this.clipNorm > 0)) {
      throw new Error(`Adam: clipNorm must be > 0 when given, got ${this.clipNorm}`);
    }
    const seen = new Set<string>();
    for (const p of params) {
      if (seen.has(p.name)) throw new Error(`Adam: parameter name "${p.name}" appears twice`);
      seen.add(p.name);
      need("Adam", `parameter "${p.name}"`, p.tensor, p.size);
      if (p.linf) {
        const copies = p.linf.copies ?? 1;
        if (!Number.isInteger(copies) || copies < 1 || p.size % copies !== 0) {
          throw new Error(
            `Adam: "${p.name}" of ${p.size} values cannot be ${copies} copies around one center`,
          );
        }
        need("Adam", `L-infinity center of "${p.name}"`, p.linf.center, p.size / copies);
        if (!(p.linf.radius >= 0)) {
          throw new Error(`Adam: the L-infinity radius of "${p.name}" must be >= 0, got ${p.linf.radius}`);
        }
      }
    }
    this.m = params.map((p) => gpu.zeros([p.size]));
    this.v = params.map((p) => gpu.zeros([p.size]));
    this.normSq = gpu.zeros([1]);
  }

  /**
   * Records one optimisation step; grads[i] is the gradient of params[i], as a tensor or as the factors
   * backward left it in. A factored gradient is formed inside the update where its columns come four at
   * a time and the step needs no global norm (no clipping, trackNorm false); otherwise it is written
   * out first (the same values either way).
   */
  step(grads: (Tensor | FactoredGradient)[]): void {
    if (grads.length !== this.params.length) {
      throw new Error(`Adam.step: got ${grads.length} gradients for ${this.params.length} parameters`);
    }
    const fused = grads.map((g, i) => {
      if (g instanceof Tensor) return false;
      const p = this.params[i];
      if (g.groups * g.M * g.N !== p.size) {
        throw new Error(
          `Adam.step: the factored gradient of "${p.name}" has ${g.groups} x ${g.M} x ${g.N} values, the parameter ${p.size}`,
        );
      }
      return !this.computesNorm && g.N % 4 === 0;
    });
    this.params.forEach((p, i) => {
      const copies = p.linf?.copies ?? 1;
      if (copies > 1 && !(fused[i] && (grads[i] as FactoredGradient).groups === copies)) {
        throw new Error(
          `Adam.step: "${p.name}" shares one center among ${copies} copies, which needs a factored gradient of as many groups formed in the update`,
        );
      }
    });
    const formed: Tensor[] = [];
    const tensors = grads.map((g, i) => {
      if (g instanceof Tensor || fused[i]) return g as Tensor;
      const t = this.gpu.zeros([this.params[i].size]);
      addFactoredGradient(this.gpu, g, t);
      formed.push(t);
      return t;
    });
    this.params.forEach((p, i) => {
      if (!fused[i]) need("Adam.step", `gradient of "${p.name}"`, tensors[i], p.size);
    });
    if (this.computesNorm) {
      sumOfSquares(this.gpu, tensors.map((g, i) => ({ tensor: g, size: this.params[i].size })), {
        out: this.normSq,
      });
    }
    this.stepCount++;
    const t = this.stepCount;
    this.params.forEach((p, i) => {
      // lr, beta1, beta2, eps, weight decay, both bias corrections and the ball's radius
      // (shaders/adam_step.wgsl AdamHyper; < 0: no ball, and `center` is not read).
      const hyper = [
        this.lr,
        this.beta1,
        this.beta2,
        this.eps,
        p.weightDecay ?? this.weightDecay,
        1 - this.beta1 ** t,
        1 - this.beta2 ** t,
        p.linf?.radius ?? -1,
      ];
      if (fused[i]) {
        this.stepFactored(i, grads[i] as FactoredGradient, hyper);
        return;
      }
      const u = uniforms().u32(p.size).f32(...hyper.slice(0, 7), this.clipNorm ?? 0, hyper[7]);
      // Four values per storage access where the size allows (the same bits; shaders/optimizer.wgsl).
      const vec4 = p.size % 4 === 0;
      const { params, grid } = elementwise(this.gpu, vec4 ? p.size / 4 : p.size);
      this.gpu.run(
        this.gpu.pipeline("optimizer.wgsl", vec4 ? "adam_vec4" : "adam", params),
        [p.tensor, tensors[i], this.m[i], this.v[i], this.normSq, p.linf?.center ?? tensors[i]],
        grid,
        u,
      );
    });
    this.gpu.release(...formed);
  }

  /** Parameter i's update with its gradient formed from factors g in the same pass, on the register
   *  blocks of the adapter's matmul tiles (their columns rounded to whole vec4s). */
  private stepFactored(i: number, g: FactoredGradient, hyper: number[]): void {
    const p = this.params[i], tiles = matmulTiles(this.gpu), gpu = this.gpu;
    const TM = tiles.TM, TN = Math.max(4, tiles.TN - (tiles.TN % 4));
    const block = { TM, TN, WG_X: tiles.WG_X, WG_Y: tiles.WG_Y };
    // A center shared by the copies, from its texture mirror where the matmuls read textures (one chunk).
    const shared = (p.linf?.copies ?? 1) > 1 ? p.linf!.center : undefined;
    const mirrored = shared !== undefined && fitsWholeMirror(gpu, shared, g.M, g.N);
    gpu.run(
      mirrored
        ? gpu.pipeline("adam_factored_texture.wgsl", "adam_factored_texture", block)
        : gpu.pipeline("adam_factored.wgsl", "adam_factored", { ...block, CENTER_SHARED: !!shared }),
      [
        g.a,
        g.b,
        p.tensor,
        this.m[i],
        this.v[i],
        mirrored ? gpu.mirror(shared, g.M, g.N)[0].view : p.linf?.center ?? g.a,
      ],
      [Math.ceil(g.M / (TM * tiles.WG_X)), Math.ceil(g.N / (TN * tiles.WG_Y)), g.groups],
      uniforms().u32(g.M, g.N, g.rows, 0).f32(...hyper),
    );
  }

  /** Global L2 norm of the last step's gradients, before clipping (reads back: for logging). */
  async gradNorm(): Promise<number> {
    if (this.stepCount === 0) throw new Error("Adam.gradNorm: no step has been taken yet");
    if (!this.computesNorm) {
      throw new Error("Adam.gradNorm: this optimizer was made with trackNorm: false and no clipping");
    }
    return Math.sqrt((await this.normSq.read())[0]);
  }

  /** Copies the optimizer state to the CPU (one readback). */
  async saveState(): Promise<AdamState> {
    const all = await this.gpu.readMany([...this.m, ...this.v]);
    const n = this.params.length;
    return {
      step: this.stepCount,
      names: this.params.map((p) => p.name),
      m: all.slice(0, n),
      v: all.slice(n),
    };
  }

  /** Restores a state saved by saveState (same parameters, same order). */
  loadState(s: AdamState): void {
    const n = this.params.length;
    if (s.names.length !== n || s.m.length !== n || s.v.length !== n) {
      throw new Error(`Adam.loadState: state has ${s.names.length} parameters, optimizer has ${n}`);
    }
    if (!(Number.isInteger(s.step) && s.step >= 0)) {
      throw new Error(`Adam.loadState: bad step count ${s.step}`);
    }
    this.params.forEach((p, i) => {
      if (s.names[i] !== p.name) {
        throw new Error(`Adam.loadState: parameter ${i} is "${s.names[i]}" in the state, "${p.name}" here`);
      }
      for (const [what, arr] of [["m", s.m[i]], ["v", s.v[i]]] as const) {
        if (arr.length !== p.size) {
          throw new Error(`Adam.loadState: ${what} of "${p.name}" has ${arr.length} values, needs ${p.size}`);
        }
      }
      this.gpu.write(this.m[i], s.m[i]);
      this.gpu.write(this.v[i], s.v[i]);
    });
    this.stepCount = s.step;
  }

  /**
   * Records copies of this optimizer's moments into `to` (an Adam over other tensors of the same
   * parameters) and gives it this step count: for parameter i, each range moves elements [from, from +
   * count) to [at, at + count). How a batch of grouped parameters continues with some groups only
   * (experiments/editing/ft.ts); the moved elements then step exactly as they would have here.
   */
  copyMomentsTo(to: Adam, ranges: { from: number; at: number; count: number }[][]): void {
    if (to.params.length !== this.params.length || ranges.length !== this.params.length) {
      throw new Error(
        `Adam.copyMomentsTo: ${to.params.length} parameters and ${ranges.length} range lists for ${this.params.length}`,
      );
    }
    ranges.forEach((list, i) => {
      for (const r of list) {
        this.gpu.copy(this.m[i], to.m[i], r.count, r.from, r.at);
        this.gpu.copy(this.v[i], to.v[i], r.count, r.from, r.at);
      }
    });
    to.stepCount = this.stepCount;
  }

  /** Frees the moment buffers; the parameters themselves are the caller's. */
  destroy(): void {
    for (const t of [...this.m, ...this.v, this.normSq]) t.destroy();
  }
}

/** Records g = 0 for each (whole) gradient tensor: buffer clears, no dispatches (on llvmpipe each
 *  dispatch costs a wake-up of every worker thread; a training step zeroes ~80 tensors). */
export function zeroGrads(gpu: Gpu, grads: Tensor[]): void {
  for (const g of grads) gpu.clear(g);
}

/** Records x[0..n) = value. */
export function fill(gpu: Gpu, x: Tensor, value: number, n = x.size): void {
  need("fill", "x", x, n);
  const { params, grid } = elementwise(gpu, n);
  gpu.run(
    gpu.pipeline("optimizer.wgsl", "fill", params),
    [x],
    grid,
    uniforms().u32(n).f32(value),
  );
}

/** Records w = clamp(w, w0 - eps, w0 + eps) over the first n values: an L-infinity ball around w0. */
export function projectLinf(gpu: Gpu, w: Tensor, w0: Tensor, eps: number, n = w.size): void {
  if (!(eps >= 0)) throw new Error(`projectLinf: eps must be >= 0, got ${eps}`);
  need("projectLinf", "w", w, n);
  need("projectLinf", "w0", w0, n);
  const { params, grid } = elementwise(gpu, n);
  gpu.run(
    gpu.pipeline("optimizer.wgsl", "project_linf", params),
    [w, w0],
    grid,
    uniforms().u32(n).f32(eps),
  );
}
