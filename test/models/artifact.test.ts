/**
 * Artifact validation against bad and hostile files: each failure is a ModelError with the reason
 * callers branch on (corrupt, invalid, feature-version, too-few-windows, hash-mismatch, too-large)
 * and a message that names what is wrong; nothing else is thrown, whatever the JSON holds.
 */
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { ModelError, parseArtifact, serializeArtifact, type ModelErrorReason } from "../../models/artifact.js";
import { initBackend } from "../../models/backend.js";
import { AnomalyModel } from "../../models/model.js";
import { weightsHash } from "../../models/network.js";
import { trainModel } from "../../models/train.js";
import { MAX_ARTIFACT_BYTES, type ModelArtifact } from "../../models/types.js";
import { syntheticInputs } from "./synthetic.js";

type Json = Record<string, any>;

describe("model artifact", () => {
  let good: string;
  const edit = (f: (a: Json) => void): string => {
    const a = JSON.parse(good) as Json;
    f(a);
    return JSON.stringify(a);
  };
  const rejects = (data: string | Uint8Array, reason: ModelErrorReason, message: RegExp, o: { minWindows?: number } = {}): void => {
    assert.throws(() => parseArtifact(data, o), (err: unknown) => {
      assert.ok(err instanceof ModelError, `a ModelError, got ${String(err)}`);
      assert.equal(err.reason, reason, err.message);
      assert.match(err.message, message);
      return true;
    });
    assert.throws(() => AnomalyModel.fromArtifact(data, o), ModelError);
  };
  /** Float32 little-endian base64 of the values. */
  const b64 = (values: number[]): string => {
    const b = Buffer.alloc(values.length * 4);
    values.forEach((v, i) => b.writeFloatLE(v, i * 4));
    return b.toString("base64");
  };

  before(async () => {
    await initBackend();
    const model = await trainModel(syntheticInputs(300, 2), { scope: { kind: "generic" }, epochs: 2 });
    good = serializeArtifact(model.toArtifact());
    model.dispose();
  });

  it("accepts what training wrote", () => {
    const a: ModelArtifact = parseArtifact(good);
    assert.equal(a.manifest.trainingWindows, 300);
    assert.equal(a.weights.length, 8);
  });

  it("rejects a file that is not JSON as corrupt", () => {
    rejects(good.slice(0, good.length / 2), "corrupt", /not valid JSON/);
    rejects("", "corrupt", /not valid JSON/);
    rejects(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), "corrupt", /not valid JSON/);
  });

  it("rejects an artifact above the size cap before parsing it", () => {
    rejects(" ".repeat(MAX_ARTIFACT_BYTES + 1), "too-large", /more than the 4194304/);
    rejects(new Uint8Array(MAX_ARTIFACT_BYTES + 1), "too-large", /bytes/);
    // multi-byte characters: the cap is on bytes, not characters
    rejects("é".repeat(MAX_ARTIFACT_BYTES / 2 + 1), "too-large", /bytes/);
  });

  it("rejects another feature version", () => {
    rejects(edit((a) => (a.manifest.featureVersion = "layer-window-v1")), "feature-version", /layer-window-v1.*layer-window-v2/);
  });

  it("rejects a model trained on too few windows", () => {
    rejects(edit((a) => (a.manifest.trainingWindows = 199)), "too-few-windows", /199 windows, fewer than the 200/);
    rejects(good, "too-few-windows", /fewer than the 1000/, { minWindows: 1000 });
    assert.equal(parseArtifact(edit((a) => (a.manifest.trainingWindows = 199)), { minWindows: 100 }).manifest.trainingWindows, 199);
  });

  it("rejects weights that are not the ones the manifest hashed", () => {
    rejects(
      edit((a) => {
        const bytes = Buffer.from(a.weights[0].dataB64, "base64");
        bytes[0] ^= 1;
        a.weights[0].dataB64 = bytes.toString("base64");
      }),
      "hash-mismatch",
      /weights hash to/,
    );
    rejects(edit((a) => (a.manifest.weightsHash = "0".repeat(64))), "hash-mismatch", /manifest says 0000/);
  });

  it("rejects a non-finite weight even with a matching hash", () => {
    rejects(
      edit((a) => {
        const bias = a.weights[1];
        const values = Array.from({ length: bias.shape[0] }, () => 0);
        values[3] = Number.NaN;
        bias.dataB64 = b64(values);
        const arrays = (a.weights as { dataB64: string }[]).map((w) => {
          const b = Buffer.from(w.dataB64, "base64");
          return Float32Array.from({ length: b.length / 4 }, (_, i) => b.readFloatLE(i * 4));
        });
        a.manifest.weightsHash = weightsHash(arrays);
      }),
      "invalid",
      /weights\[1\] \(dense_0\/bias\) holds a value that is not finite/,
    );
  });

  it("rejects wrong formats, shapes and types with a message naming the field", () => {
    const cases: [(a: Json) => void, RegExp][] = [
      [(a) => (a.manifest.format = "onnx"), /manifest.format/],
      [(a) => (a.manifest.formatVersion = 2), /formatVersion is 2/],
      [(a) => delete a.manifest, /manifest is not an object/],
      [(a) => (a.manifest.normalisation.center = a.manifest.normalisation.center.slice(1)), /normalisation.center has 32 entries, expected 33/],
      [(a) => (a.manifest.normalisation.center[4] = "1"), /normalisation.center\[4\] is not a finite number/],
      [(a) => (a.manifest.normalisation.scale[0] = 0), /scale\[0\] is 0, not positive/],
      [(a) => (a.manifest.normalisation.columns[0] = "cpu"), /columns\[0\] is "cpu", expected cpu_seconds.rate/],
      [(a) => (a.manifest.calibration.quantiles = [3, 2, 1]), /quantiles are not sorted/],
      [(a) => (a.manifest.calibration.quantiles = new Array(5000).fill(1)), /quantiles has 5000 entries, more than 1001/],
      [(a) => (a.manifest.calibration.p995 = null), /calibration.p995 is not a finite number/],
      [(a) => (a.manifest.architecture.hidden = [32, 8, 1e9]), /hidden\[2\]/],
      [(a) => (a.manifest.architecture.hidden = [16, 8, 16]), /weights\[0\] \(dense_0\/kernel\) has shape \[33,32\], expected \[33,16\]/],
      [(a) => (a.manifest.architecture.activation = "softmax"), /activation "softmax"/],
      [(a) => (a.manifest.architecture.inputs = 53), /inputs is 53/],
      [(a) => (a.manifest.scope = { kind: "image" }), /scope.imageId is not a string/],
      [(a) => (a.manifest.backend = "gpu"), /backend "gpu"/],
      [(a) => (a.manifest.dataHash = "xyz"), /dataHash/],
      [(a) => (a.manifest.createdAt = "yesterday"), /createdAt is not a date/],
      [(a) => (a.manifest.trainingWindows = 1.5), /trainingWindows is not an integer/],
      [(a) => (a.weights = a.weights.slice(0, 7)), /weights has 7 tensors, the architecture needs 8/],
      [(a) => (a.weights = { length: 8 }), /weights is not an array/],
      [(a) => (a.weights[2].dataB64 = "!!!!"), /weights\[2\] \(dense_1\/kernel\).dataB64 is not base64/],
      [(a) => (a.weights[3].dataB64 = b64([1, 2])), /holds 8 bytes, expected 32/],
      [(a) => (a.weights[0].shape = "33x32"), /weights\[0\].shape is not an array/],
    ];
    for (const [f, message] of cases) rejects(edit(f), "invalid", message);
    rejects("[]", "invalid", /artifact is not an object/);
    rejects("null", "invalid", /artifact is not an object/);
    rejects('"text"', "invalid", /artifact is not an object/);
    const cyclic = JSON.parse(good) as Json;
    cyclic.self = cyclic;
    assert.throws(() => AnomalyModel.fromArtifact(cyclic as ModelArtifact), (err: unknown) => err instanceof ModelError && err.reason === "invalid" && /cannot be serialised/.test(err.message));
  });

  it("ignores prototype keys in hostile JSON", () => {
    // An inherited "manifest" must not count: only own properties are read.
    rejects('{"__proto__": {"manifest": {}}, "weights": []}', "invalid", /manifest is not an object/);
    const polluted = good.replace('{"manifest":', '{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}},"manifest":');
    const a = parseArtifact(polluted) as unknown as Json;
    assert.equal(({} as Json).polluted, undefined);
    assert.equal(a.polluted, undefined);
    assert.deepEqual(Object.keys(a), ["manifest", "weights"]);
    rejects(edit((a) => (a.manifest.normalisation = JSON.parse('{"__proto__": {"columns": []}}'))), "invalid", /normalisation.columns is not an array/);
  });
});
