/**
 * The autoencoder network: a stack of dense layers inputs → hidden… → inputs (tfjs-layers), built
 * from the artifact's architecture, and its weights to and from the artifact's float32 form.
 */

import { createHash } from "node:crypto";
import * as tf from "@tensorflow/tfjs-core";
import * as tfl from "@tensorflow/tfjs-layers";
import type { ModelArtifact, ModelManifest } from "./types.js";

/** Hidden layers of a new model: wide, bottleneck, wide. */
export const DEFAULT_HIDDEN = [32, 8, 32];
/** Activation of every hidden layer (ELU: no dead units on centred inputs); the output is linear. */
export const HIDDEN_ACTIVATION = "elu";

/** Shapes of the weights in order: kernel [in, out] then bias [out] per dense layer. */
export function weightShapes(arch: ModelManifest["architecture"]): { name: string; shape: number[] }[] {
  const sizes = [arch.inputs, ...arch.hidden, arch.inputs];
  const out: { name: string; shape: number[] }[] = [];
  for (let i = 0; i + 1 < sizes.length; i++) {
    out.push({ name: `dense_${i}/kernel`, shape: [sizes[i]!, sizes[i + 1]!] });
    out.push({ name: `dense_${i}/bias`, shape: [sizes[i + 1]!] });
  }
  return out;
}

/** A fresh network; `seed` makes the initial weights reproducible. */
export function buildNetwork(arch: ModelManifest["architecture"], seed = 1): tfl.Sequential {
  const model = tfl.sequential();
  const sizes = [...arch.hidden, arch.inputs];
  sizes.forEach((units, i) => {
    const last = i === sizes.length - 1;
    model.add(
      tfl.layers.dense({
        units,
        activation: last ? "linear" : (arch.activation as "elu"),
        kernelInitializer: tfl.initializers.glorotUniform({ seed: seed + i }),
        biasInitializer: "zeros",
        name: `dense_${i}`,
        ...(i === 0 ? { inputShape: [arch.inputs] } : {}),
      }),
    );
  });
  return model;
}

/** Decodes the artifact's base64 weights into float32 arrays (checked by parseArtifact beforehand). */
export function decodeWeights(weights: ModelArtifact["weights"]): Float32Array[] {
  return weights.map((w) => {
    const bytes = Buffer.from(w.dataB64, "base64");
    const out = new Float32Array(bytes.length / 4);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
    return out;
  });
}

/** sha256 (hex) of the weights' little-endian float32 bytes, concatenated in order. */
export function weightsHash(arrays: readonly Float32Array[]): string {
  const h = createHash("sha256");
  for (const a of arrays) h.update(littleEndianBytes(a));
  return h.digest("hex");
}

function littleEndianBytes(a: Float32Array): Buffer {
  const bytes = Buffer.alloc(a.length * 4);
  for (let i = 0; i < a.length; i++) bytes.writeFloatLE(a[i]!, i * 4);
  return bytes;
}

/** The network's weights in the artifact's form. */
export function exportWeights(model: tfl.Sequential, arch: ModelManifest["architecture"]): { weights: ModelArtifact["weights"]; arrays: Float32Array[] } {
  const shapes = weightShapes(arch);
  const arrays = model.getWeights().map((t) => Float32Array.from(t.dataSync()));
  const weights = arrays.map((a, i) => ({ name: shapes[i]!.name, shape: shapes[i]!.shape, dataB64: littleEndianBytes(a).toString("base64") }));
  return { weights, arrays };
}

/**
 * The network for inference: each dense layer's kernel and bias as kept tensors, run with one fused
 * matMul + bias + activation per layer (tfjs-layers' predict adds per-call checks that cost more
 * than the arithmetic of a network this small).
 */
export class Forward {
  private readonly layers: { kernel: tf.Tensor2D; bias: tf.Tensor1D; activation: "elu" | "relu" | "linear" }[] = [];

  constructor(arch: ModelManifest["architecture"], arrays: readonly Float32Array[]) {
    const shapes = weightShapes(arch);
    for (let i = 0; i < shapes.length; i += 2) {
      const last = i + 2 >= shapes.length;
      this.layers.push({
        kernel: tf.keep(tf.tensor2d(arrays[i]!, shapes[i]!.shape as [number, number], "float32")),
        bias: tf.keep(tf.tensor1d(arrays[i + 1]!, "float32")),
        activation: last ? "linear" : (arch.activation as "elu"),
      });
    }
  }

  /** Reconstructions of `rows` rows of `width` values (row-major). */
  run(x: Float32Array, rows: number, width: number): Float32Array {
    return tf.tidy(() => {
      let h: tf.Tensor2D = tf.tensor2d(x, [rows, width]);
      for (const l of this.layers) h = tf.fused.matMul({ a: h, b: l.kernel, bias: l.bias, activation: l.activation }) as tf.Tensor2D;
      return h.dataSync() as Float32Array;
    });
  }

  dispose(): void {
    for (const l of this.layers) tf.dispose([l.kernel, l.bias]);
    this.layers.length = 0;
  }
}
