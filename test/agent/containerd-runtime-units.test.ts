/**
 * containerd runtime without a daemon: the parsers for what containerd and CRI hand the agent
 * (overlay mount options into snapshot directories, including the compacted relative form;
 * index, manifest and config blobs with hostile content; event payloads in an Any), and the
 * connect path against small fake gRPC servers on a unix socket (containerd without CRI, a socket
 * that is absent, an event stream that ends), whose errors must name the flags to fix them.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { bindServer, serverStreamHandler, serviceDefinition, unaryHandler } from "../../common/grpc.js";
import { Code, ShadowError } from "../../common/errors.js";
import { chainIds } from "../../agent/layers/chain-id.js";
import { stepsForLayers } from "../../agent/runtime/engine-facts.js";
import {
  agentSnapshotDir,
  anyTypeName,
  boundMap,
  decodeEvent,
  eventFilters,
  manifestConfig,
  MAX_BLOB_BYTES,
  MAX_MAP_ENTRIES,
  parseImageConfig,
  parseJsonBlob,
  parseSnapshotMounts,
  pickManifest,
  snapshotIdOfDir,
  specMounts,
  verifyDigest,
} from "../../agent/runtime/containerd/parse.js";
import { connectContainerd, containerdLayout, ContainerdRuntime, criHowTo, socketHowTo } from "../../agent/runtime/containerd/containerd-runtime.js";
import { ContainerCreateSchema, ContainerDeleteSchema, ContainerUpdateSchema } from "../../proto/gen/containerd/events/container_pb.js";
import { TaskDeleteSchema, TaskExecAddedSchema, TaskExitSchema, TaskOOMSchema, TaskPausedSchema, TaskStartSchema } from "../../proto/gen/containerd/events/task_pb.js";
import { Containers } from "../../proto/gen/containerd/services/containers/v1/containers_pb.js";
import { Content } from "../../proto/gen/containerd/services/content/v1/content_pb.js";
import { Events } from "../../proto/gen/containerd/services/events/v1/events_pb.js";
import { Images } from "../../proto/gen/containerd/services/images/v1/images_pb.js";
import { Snapshots } from "../../proto/gen/containerd/services/snapshots/v1/snapshots_pb.js";
import { Tasks } from "../../proto/gen/containerd/services/tasks/v1/tasks_pb.js";
import { Status as TaskStatus } from "../../proto/gen/containerd/types/task/task_pb.js";
import { Introspection } from "../../proto/gen/containerd/services/introspection/v1/introspection_pb.js";
import { Version } from "../../proto/gen/containerd/services/version/v1/version_pb.js";
import { ContainerState, RuntimeService } from "../../proto/gen/runtime/v1/api_pb.js";

const ROOT = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs";
const d = (id: string) => `${ROOT}/snapshots/${id}/fs`;
const sha = (s: string) => `sha256:${createHash("sha256").update(s).digest("hex")}`;
const json = (v: unknown) => new Uint8Array(Buffer.from(JSON.stringify(v)));

function any<D extends DescMessage>(schema: D, init: MessageInitShape<D>, prefix = "") {
  return { typeUrl: `${prefix}${schema.typeName}`, value: toBinary(schema, create(schema, init)) };
}

describe("overlayfs snapshot directories", () => {
  it("names a directory by its snapshot id, as listed and as compacted in mountinfo", () => {
    assert.equal(snapshotIdOfDir(d("12")), "12");
    assert.equal(snapshotIdOfDir(`${d("12")}/`), "12");
    assert.equal(snapshotIdOfDir("12/fs"), "12");
    assert.equal(snapshotIdOfDir("/var/lib/docker/overlay2/abc/diff"), "");
    assert.equal(snapshotIdOfDir("../fs"), "");
    assert.equal(snapshotIdOfDir(`${ROOT}/snapshots/../fs`), "");
    assert.equal(containerdLayout.dirKey(d("7")), containerdLayout.mountDirKey("7/fs"));
    assert.equal(containerdLayout.isImageEntry("7"), true);
  });

  it("reads upperdir and lowerdirs (top first) from an overlay mount", () => {
    const dirs = parseSnapshotMounts(
      [{ type: "overlay", source: "overlay", options: ["index=off", `workdir=${ROOT}/snapshots/9/work`, `upperdir=${d("9")}`, `lowerdir=${d("5")}:${d("4")}:${d("2")}`] }],
      undefined,
    );
    assert.deepEqual(dirs, { upperDir: d("9"), lowerDirs: [d("5"), d("4"), d("2")] });
  });

  it("rebuilds paths under the directory the agent mounts, from the ids only", () => {
    const dirs = parseSnapshotMounts([{ type: "overlay", source: "overlay", options: [`upperdir=${d("9")}`, `lowerdir=${d("5")}:4/fs`] }], "/host/ctrd-overlay");
    assert.deepEqual(dirs, { upperDir: "/host/ctrd-overlay/snapshots/9/fs", lowerDirs: ["/host/ctrd-overlay/snapshots/5/fs", "/host/ctrd-overlay/snapshots/4/fs"] });
    assert.equal(agentSnapshotDir(d("3"), "/mnt/ov/"), "/mnt/ov/snapshots/3/fs");
  });

  it("handles bind mounts: a layerless image's writable dir, a one-layer view", () => {
    assert.deepEqual(parseSnapshotMounts([{ type: "bind", source: d("3"), options: ["rbind", "rw"] }], undefined), { upperDir: d("3"), lowerDirs: [] });
    assert.deepEqual(parseSnapshotMounts([{ type: "bind", source: d("3"), options: ["rbind", "ro"] }], undefined), { upperDir: "", lowerDirs: [d("3")] });
  });

  it("refuses what is not an overlayfs snapshot mount", () => {
    const bad = (m: Array<{ type: string; source: string; options: string[] }>, root?: string) =>
      assert.throws(() => parseSnapshotMounts(m, root), (e: unknown) => e instanceof ShadowError && e.code === Code.InvalidArgument);
    bad([]);
    bad([{ type: "overlay", source: "overlay", options: [`upperdir=${d("1")}`] }]);
    bad([{ type: "overlay", source: "overlay", options: [`lowerdir=${d("1")}::${d("2")}`] }]);
    bad([{ type: "erofs", source: "/dev/vdb", options: [] }]);
    bad([{ type: "overlay", source: "overlay", options: ["lowerdir=/etc/passwd"] }], "/host/ov");
    bad([{ type: "overlay", source: "overlay", options: ["lowerdir=relative/path"] }]);
    bad([{ type: "overlay", source: "overlay", options: [`lowerdir=${Array.from({ length: 600 }, (_, i) => d(String(i))).join(":")}`] }]);
  });
});

describe("index, manifest and config blobs", () => {
  const cfg = { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha("config"), size: 100 };
  const man = (digest: string, arch: string, os = "linux") => ({ mediaType: "application/vnd.oci.image.manifest.v1+json", digest, size: 500, platform: { os, architecture: arch } });

  it("picks the host's platform from an index, else the first linux one", () => {
    const idx = { schemaVersion: 2, manifests: [man(sha("w"), "amd64", "windows"), man(sha("a"), "arm64"), man(sha("x"), "amd64")] };
    assert.equal(pickManifest(idx, "amd64").digest, sha("x"));
    assert.equal(pickManifest(idx, "arm64").digest, sha("a"));
    assert.equal(pickManifest(idx, "s390x").digest, sha("a"));
    // Attestations and other artifacts (unknown media types) are never picked.
    const withArtifact = { manifests: [{ mediaType: "application/vnd.in-toto+json", digest: sha("att"), size: 10 }, man(sha("m"), "riscv64")] };
    assert.equal(pickManifest(withArtifact, "amd64").digest, sha("m"));
  });

  it("finds the config of a manifest and checks its media type", () => {
    assert.equal(manifestConfig({ schemaVersion: 2, mediaType: "application/vnd.docker.distribution.manifest.v2+json", config: { ...cfg, mediaType: "application/vnd.docker.container.image.v1+json" }, layers: [] }).digest, cfg.digest);
    assert.equal(manifestConfig({ schemaVersion: 2, config: cfg, layers: [] }).digest, cfg.digest);
    assert.throws(() => manifestConfig({ config: { ...cfg, mediaType: "application/vnd.cncf.helm.config.v1+json" } }), /not an image config/);
    assert.throws(() => manifestConfig({ mediaType: "application/vnd.oci.image.index.v1+json", config: cfg }), /media type/);
  });

  it("refuses digests that are not sha256, sizes that are not sizes, oversized blobs", () => {
    assert.throws(() => manifestConfig({ config: { ...cfg, digest: "sha512:abcd" } }), /sha256/);
    assert.throws(() => manifestConfig({ config: { ...cfg, digest: `sha256:${"A".repeat(64)}` } }), /sha256/);
    assert.throws(() => manifestConfig({ config: { ...cfg, digest: `${cfg.digest}/../x` } }), /sha256/);
    assert.throws(() => manifestConfig({ config: { ...cfg, size: -1 } }), /size/);
    assert.throws(() => manifestConfig({ config: { ...cfg, size: "100" } }), /size/);
    assert.throws(() => manifestConfig({ config: { ...cfg, size: MAX_BLOB_BYTES + 1 } }), /more than/);
    assert.throws(() => pickManifest({ manifests: [] }), /no manifests/);
    assert.throws(() => pickManifest({ manifests: "x" }), /no manifests/);
    assert.throws(() => pickManifest([]), /not a JSON object/);
    assert.throws(() => parseJsonBlob(new Uint8Array(MAX_BLOB_BYTES + 1), "blob"), /more than/);
    assert.throws(() => parseJsonBlob(new Uint8Array(Buffer.from("{nope")), "blob"), /not JSON/);
  });

  it("checks content against its digest", () => {
    const bytes = json({ a: 1 });
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    verifyDigest(bytes, digest, "blob");
    assert.throws(() => verifyDigest(json({ a: 2 }), digest, "blob"), /does not match/);
  });

  it("reads diff_ids and pairs history steps with layers, empty_layer steps left out", () => {
    const ids = [sha("l0"), sha("l1"), sha("l2")];
    const c = parseImageConfig({
      architecture: "amd64",
      rootfs: { type: "layers", diff_ids: ids },
      history: [
        { created_by: "ADD rootfs.tar /", created: "2026-01-01T00:00:00Z" },
        { created_by: "ENV A=1", empty_layer: true },
        { created_by: "RUN make" },
        { created_by: "COPY app /app", comment: "buildkit.dockerfile.v0" },
        { created_by: "CMD [\"/app\"]", empty_layer: true },
      ],
    });
    assert.deepEqual(c.diffIds, ids);
    assert.deepEqual(stepsForLayers(c.history, 3).map((s) => s?.createdBy), ["ADD rootfs.tar /", "RUN make", "COPY app /app"]);
    // History that does not add up gives no names rather than wrong ones.
    assert.deepEqual(stepsForLayers(c.history, 4), [undefined, undefined, undefined, undefined]);
    assert.deepEqual(parseImageConfig({ rootfs: { type: "layers", diff_ids: ids }, history: "junk" }).history, []);
    assert.equal(chainIds(c.diffIds)[0], ids[0]);
  });

  it("refuses configs whose layers are not sha256 digests", () => {
    assert.throws(() => parseImageConfig({ rootfs: { type: "layers", diff_ids: ["sha256:short"] } }), /sha256/);
    assert.throws(() => parseImageConfig({ rootfs: { type: "layers", diff_ids: [42] } }), /sha256/);
    assert.throws(() => parseImageConfig({ rootfs: { type: "layers" } }), /not a list/);
    assert.throws(() => parseImageConfig({ rootfs: { type: "squashfs", diff_ids: [] } }), /not "layers"/);
    assert.throws(() => parseImageConfig({ rootfs: { type: "layers", diff_ids: Array.from({ length: 600 }, (_, i) => sha(String(i))) } }), /more than/);
    assert.throws(() => parseImageConfig(null), /not a JSON object/);
  });

  it("bounds label and annotation maps", () => {
    const big: Record<string, string> = {};
    for (let i = 0; i < MAX_MAP_ENTRIES + 100; i++) big[`k${i}`] = "v";
    big["k0"] = "x".repeat(10_000);
    const m = boundMap(big);
    assert.equal(Object.keys(m).length, MAX_MAP_ENTRIES);
    assert.equal(m["k0"]?.length, 4096);
  });
});

describe("event payloads", () => {
  const id = "a".repeat(64);

  it("decodes container and task events by type URL, with or without a host prefix", () => {
    assert.deepEqual(decodeEvent("/containers/create", any(ContainerCreateSchema, { id, image: "x" })), { id, change: "changed", action: "/containers/create" });
    assert.deepEqual(decodeEvent("/containers/update", any(ContainerUpdateSchema, { id })), { id, change: "changed", action: "/containers/update" });
    assert.deepEqual(decodeEvent("/containers/delete", any(ContainerDeleteSchema, { id })), { id, change: "removed", action: "/containers/delete" });
    assert.deepEqual(decodeEvent("/tasks/start", any(TaskStartSchema, { containerId: id, pid: 42 }, "types.containerd.io/")), { id, change: "changed", action: "/tasks/start" });
    assert.deepEqual(decodeEvent("/tasks/exit", any(TaskExitSchema, { containerId: id, id, pid: 42, exitStatus: 1 })), { id, change: "changed", action: "/tasks/exit" });
    assert.deepEqual(decodeEvent("/tasks/delete", any(TaskDeleteSchema, { containerId: id })), { id, change: "changed", action: "/tasks/delete" });
    assert.deepEqual(decodeEvent("/tasks/oom", any(TaskOOMSchema, { containerId: id })), { id, change: "changed", action: "/tasks/oom" });
    assert.deepEqual(decodeEvent("/tasks/paused", any(TaskPausedSchema, { containerId: id })), { id, change: "changed", action: "/tasks/paused" });
    assert.equal(anyTypeName("type.googleapis.com/containerd.events.TaskOOM"), "containerd.events.TaskOOM");
  });

  it("ignores exec processes, unknown payloads, garbage and odd ids", () => {
    assert.equal(decodeEvent("/tasks/exec-added", any(TaskExecAddedSchema, { containerId: id, execId: "e1" })), undefined);
    assert.equal(decodeEvent("/tasks/exit", any(TaskExitSchema, { containerId: id, id: "exec-1" })), undefined);
    assert.equal(decodeEvent("/tasks/delete", any(TaskDeleteSchema, { containerId: id, id: "exec-1" })), undefined);
    assert.equal(decodeEvent("/images/create", { typeUrl: "containerd.events.ImageCreate", value: new Uint8Array() }), undefined);
    assert.equal(decodeEvent("/tasks/start", { typeUrl: "containerd.events.TaskStart", value: new Uint8Array([0xff, 0xff, 0xff]) }), undefined);
    assert.equal(decodeEvent("/tasks/start", any(TaskStartSchema, { containerId: "../../etc" })), undefined);
    assert.equal(decodeEvent("/tasks/start", any(TaskStartSchema, { containerId: "" })), undefined);
    assert.equal(decodeEvent("/tasks/start", undefined), undefined);
  });

  it("filters the stream to one namespace's container and task topics", () => {
    assert.deepEqual(eventFilters("k8s.io"), ['namespace=="k8s.io",topic~="^/containers/"', 'namespace=="k8s.io",topic~="^/tasks/"']);
  });
});

describe("connecting", () => {
  const dir = mkdtempSync(join(tmpdir(), "sl-ctrd-unit-"));
  const servers: grpc.Server[] = [];
  after(() => {
    for (const s of servers) s.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A fake containerd: Version, Introspection and Events; CRI only when asked. */
  async function fake(name: string, withCri: boolean, events: (call: grpc.ServerWritableStream<unknown, unknown>) => void = (c) => c.end()): Promise<string> {
    const sock = join(dir, `${name}.sock`);
    const server = new grpc.Server();
    server.addService(serviceDefinition(Version), {
      version: unaryHandler(Version.method.version, async (_req, call) => {
        assert.equal(call.metadata.get("containerd-namespace")[0], "k8s.io");
        return create(Version.method.version.output, { version: "1.6.99", revision: "x" });
      }),
    });
    server.addService(serviceDefinition(Introspection), {
      plugins: unaryHandler(Introspection.method.plugins, async () =>
        create(Introspection.method.plugins.output, { plugins: [{ type: "io.containerd.snapshotter.v1", id: "overlayfs", exports: { root: "/data/ctrd/io.containerd.snapshotter.v1.overlayfs" } }] }),
      ),
    });
    server.addService(serviceDefinition(Events), {
      subscribe: serverStreamHandler(Events.method.subscribe, async (req, call) => {
        assert.deepEqual(req.filters, ['namespace=="k8s.io",topic~="^/containers/"', 'namespace=="k8s.io",topic~="^/tasks/"']);
        events(call as unknown as grpc.ServerWritableStream<unknown, unknown>);
      }),
    });
    if (withCri) {
      server.addService(serviceDefinition(RuntimeService), {
        version: unaryHandler(RuntimeService.method.version, async () => create(RuntimeService.method.version.output, { version: "0.1.0", runtimeName: "containerd", runtimeVersion: "1.6.99", runtimeApiVersion: "v1" })),
      });
    }
    await bindServer(server, `unix://${sock}`, grpc.ServerCredentials.createInsecure());
    servers.push(server);
    return sock;
  }

  it("names the flags and what to mount when the socket is absent or not a socket", async () => {
    await assert.rejects(connectContainerd({ socket: join(dir, "absent.sock") }), (e: unknown) => {
      assert.ok(e instanceof ShadowError);
      assert.equal(e.code, Code.EngineUnavailable);
      assert.match(e.message, /--containerd-socket/);
      assert.match(e.message, /--runtime/);
      assert.match(e.message, /mount the host's socket/);
      return true;
    });
    const file = join(dir, "plain");
    writeFileSync(file, "");
    await assert.rejects(connectContainerd({ socket: file }), /is not a unix socket/);
    await assert.rejects(connectContainerd({ socket: "relative.sock" }), /absolute path/);
    await assert.rejects(connectContainerd({ socket: file, namespace: "../x" }), /not a valid namespace/);
    assert.match(socketHowTo("/run/containerd/containerd.sock"), /--runtime docker/);
  });

  it("says the CRI plugin is disabled, and how to enable it, when only containerd answers", async () => {
    const sock = await fake("nocri", false);
    await assert.rejects(connectContainerd({ socket: sock, timeoutMs: 3000 }), (e: unknown) => {
      assert.ok(e instanceof ShadowError);
      assert.equal(e.code, Code.FailedPrecondition);
      assert.match(e.message, /CRI plugin/);
      assert.match(e.message, /disabled_plugins/);
      assert.match(e.message, /--containerd-socket/);
      return true;
    });
    assert.match(criHowTo(sock), /--runtime docker/);
  });

  it("connects when containerd and CRI answer, and reports a lost event stream once", async () => {
    const sock = await fake("ok", true, (call) => {
      call.write(create(Events.method.subscribe.output, { namespace: "other", topic: "/tasks/start", event: any(TaskStartSchema, { containerId: "c1" }) }));
      call.write(create(Events.method.subscribe.output, { namespace: "k8s.io", topic: "/tasks/start", event: any(TaskStartSchema, { containerId: "c2" }) }));
      call.write(create(Events.method.subscribe.output, { namespace: "k8s.io", topic: "/containers/delete", event: any(ContainerDeleteSchema, { id: "c3" }) }));
      setTimeout(() => call.end(), 50);
    });
    const rt = await connectContainerd({ socket: sock, snapshotsDir: "/host/ov/snapshots", timeoutMs: 3000 });
    try {
      assert.ok(rt instanceof ContainerdRuntime);
      assert.equal(rt.info.kind, "containerd");
      assert.equal(rt.info.version, "1.6.99");
      assert.equal(rt.info.rootDir, "/data/ctrd");
      assert.equal(rt.info.driver, "overlayfs");
      const seen: string[] = [];
      const lost: string[] = [];
      const sub = await rt.subscribe({ event: (e) => seen.push(`${e.change}:${e.id}`), lost: (why) => lost.push(why) });
      for (let i = 0; i < 100 && lost.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      sub.close();
      assert.deepEqual(seen, ["changed:c2", "removed:c3"]);
      assert.equal(lost.length, 1);
      // A container id that is not an id is never asked for.
      assert.equal(await rt.inspect("../../etc"), undefined);
      assert.equal(await rt.resolveImage({ id: "c", name: "", image: "", imageId: "nope", state: "", pid: 0, labels: {}, driver: "overlayfs", upperDir: "", lowerDirs: [], mounts: [] }), undefined);
    } finally {
      rt.close();
    }
  });
});

describe("a fake containerd with CRI: containers, pods, layers", () => {
  const dir = mkdtempSync(join(tmpdir(), "sl-ctrd-fake-"));
  let server: grpc.Server | undefined;
  after(() => {
    server?.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  const HOST = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs";
  const AGENT = "/host/ctrd-overlay";
  const blob = (v: unknown) => {
    const bytes = json(v);
    return { bytes, digest: `sha256:${createHash("sha256").update(bytes).digest("hex")}`, size: bytes.length };
  };
  const diffIds = [sha("base"), sha("app")];
  const chains = chainIds(diffIds);
  const config = blob({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: diffIds },
    history: [{ created_by: "ADD base.tar /" }, { created_by: "WORKDIR /app", empty_layer: true }, { created_by: "COPY app /app" }],
  });
  const manifest = blob({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config.digest, size: config.size }, layers: [] });
  const index = blob({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [
      { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha("other-arch"), size: 10, platform: { os: "linux", architecture: "mips64" } },
      { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: manifest.digest, size: manifest.size, platform: { os: "linux", architecture: process.arch === "x64" ? "amd64" : process.arch } },
    ],
  });
  // A "manifest" whose bytes are not what its digest says.
  const forged = { bytes: json({ schemaVersion: 2, config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha("evil"), size: 10 } }), digest: sha("honest"), size: 80 };
  const blobs = new Map([config, manifest, index, forged].map((b) => [b.digest, b.bytes]));
  const images = new Map([
    ["docker.io/shop/app:1", { mediaType: "application/vnd.oci.image.index.v1+json", digest: index.digest, size: index.size }],
    ["docker.io/shop/app@" + index.digest, { mediaType: "application/vnd.oci.image.index.v1+json", digest: index.digest, size: index.size }],
    ["docker.io/shop/forged:1", { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: forged.digest, size: forged.size }],
  ]);
  const labelsOf = (kind: string) => ({ "io.cri-containerd.kind": kind, "io.kubernetes.pod.name": "web" });
  const containers = new Map([
    ["sb1", { id: "sb1", image: "pause:1", snapshotter: "overlayfs", snapshotKey: "sb1", labels: labelsOf("sandbox") }],
    ["c1", { id: "c1", image: "docker.io/shop/app:1", snapshotter: "overlayfs", snapshotKey: "c1", labels: labelsOf("container") }],
    ["c2", { id: "c2", image: "docker.io/shop/app:1", snapshotter: "overlayfs", snapshotKey: "c2", labels: labelsOf("container") }],
    ["c3", { id: "c3", image: "docker.io/shop/forged:1", snapshotter: "overlayfs", snapshotKey: "c3", labels: labelsOf("container") }],
    ["c4", { id: "c4", image: "docker.io/shop/app:1", snapshotter: "overlayfs", snapshotKey: "c4", labels: labelsOf("container") }],
    ["c5", { id: "c5", image: "docker.io/shop/app:1", snapshotter: "overlayfs", snapshotKey: "c5-gone", labels: labelsOf("container") }],
    ["c6", { id: "c6", image: "docker.io/shop/app:1", snapshotter: "stargz", snapshotKey: "c6", labels: {} }],
  ]);
  const overlay = (upper: string, lowers: string[]) => [{ type: "overlay", source: "overlay", target: "", options: ["index=off", `workdir=${HOST}/snapshots/${upper}/work`, `upperdir=${HOST}/snapshots/${upper}/fs`, `lowerdir=${lowers.map((l) => `${HOST}/snapshots/${l}/fs`).join(":")}`] }];
  const mounts = new Map([
    ["c1", overlay("9", ["5", "4"])],
    ["c2", overlay("10", ["7", "6"])],
    ["c3", overlay("11", ["5", "4"])],
    ["c4", overlay("12", ["5", "4"])],
  ]);
  // c2's snapshot sits on a chain that is not its image's.
  const parents = new Map<string, string>([
    ["c1", chains[1] ?? ""],
    ["c3", chains[1] ?? ""],
    ["c4", chains[1] ?? ""],
    [chains[1] ?? "", chains[0] ?? ""],
    [chains[0] ?? "", ""],
    ["c2", sha("elsewhere-top")],
    [sha("elsewhere-top"), sha("elsewhere-bottom")],
    [sha("elsewhere-bottom"), ""],
  ]);
  const pods = new Map([["sb1", { id: "sb1", metadata: { name: "web", namespace: "shop", uid: "u-1", attempt: 0 }, labels: { app: "web" }, annotations: { "team/owner": "payments" } }]]);
  const criContainers = new Map([
    ["c1", { id: "c1", podSandboxId: "sb1", metadata: { name: "app", attempt: 0 }, state: ContainerState.CONTAINER_RUNNING }],
    ["c2", { id: "c2", podSandboxId: "sb1", metadata: { name: "side", attempt: 0 }, state: ContainerState.CONTAINER_RUNNING }],
    ["c3", { id: "c3", podSandboxId: "sb1", metadata: { name: "forged", attempt: 0 }, state: ContainerState.CONTAINER_EXITED }],
    ["c4", { id: "c4", podSandboxId: "sb-deleted", metadata: { name: "orphan", attempt: 0 }, state: ContainerState.CONTAINER_RUNNING }],
  ]);
  const notFound = (what: string) => new ShadowError(Code.NotFound, `${what}: not found`);
  const namespaces: string[] = [];
  const ns = (call: { metadata: grpc.Metadata }) => namespaces.push(String(call.metadata.get("containerd-namespace")[0] ?? ""));

  async function start(): Promise<string> {
    const sock = join(dir, "ctrd.sock");
    server = new grpc.Server();
    server.addService(serviceDefinition(Version), { version: unaryHandler(Version.method.version, async () => create(Version.method.version.output, { version: "1.6.20" })) });
    server.addService(serviceDefinition(Containers), {
      get: unaryHandler(Containers.method.get, async (req, call) => {
        ns(call);
        const c = containers.get(req.id);
        if (c === undefined) throw notFound(`container ${req.id}`);
        return create(Containers.method.get.output, { container: c });
      }),
      listStream: serverStreamHandler(Containers.method.listStream, async (_req, call) => {
        ns(call);
        for (const c of containers.values()) call.write(create(Containers.method.listStream.output, { container: c }));
        call.end();
      }),
    });
    server.addService(serviceDefinition(Images), {
      get: unaryHandler(Images.method.get, async (req, call) => {
        ns(call);
        const target = images.get(req.name);
        if (target === undefined) throw notFound(`image ${req.name}`);
        return create(Images.method.get.output, { image: { name: req.name, target: { ...target, size: BigInt(target.size) } } });
      }),
      list: unaryHandler(Images.method.list, async (req) => {
        const want = req.filters[0]?.replace("target.digest==", "");
        return create(Images.method.list.output, { images: [...images].filter(([, t]) => t.digest === want).map(([name, t]) => ({ name, target: { ...t, size: BigInt(t.size) } })) });
      }),
    });
    server.addService(serviceDefinition(Content), {
      read: serverStreamHandler(Content.method.read, async (req, call) => {
        ns(call);
        const b = blobs.get(req.digest);
        if (b === undefined) throw notFound(`content ${req.digest}`);
        // In two chunks, as containerd streams larger blobs.
        const half = Math.floor(b.length / 2);
        call.write(create(Content.method.read.output, { offset: 0n, data: b.subarray(0, half) }));
        call.write(create(Content.method.read.output, { offset: BigInt(half), data: b.subarray(half) }));
        call.end();
      }),
    });
    server.addService(serviceDefinition(Snapshots), {
      mounts: unaryHandler(Snapshots.method.mounts, async (req) => {
        const m = mounts.get(req.key);
        if (m === undefined) throw notFound(`snapshot ${req.key}`);
        return create(Snapshots.method.mounts.output, { mounts: m });
      }),
      stat: unaryHandler(Snapshots.method.stat, async (req) => {
        const p = parents.get(req.key);
        if (p === undefined) throw notFound(`snapshot ${req.key}`);
        return create(Snapshots.method.stat.output, { info: { name: req.key, parent: p } });
      }),
      usage: unaryHandler(Snapshots.method.usage, async () => create(Snapshots.method.usage.output, { size: 4096n, inodes: 3n })),
    });
    server.addService(serviceDefinition(Tasks), {
      get: unaryHandler(Tasks.method.get, async (req) => {
        if (req.containerId !== "c1") throw notFound(`task ${req.containerId}`);
        return create(Tasks.method.get.output, { process: { containerId: "c1", pid: 4242, status: TaskStatus.RUNNING } });
      }),
    });
    server.addService(serviceDefinition(RuntimeService), {
      version: unaryHandler(RuntimeService.method.version, async () => create(RuntimeService.method.version.output, { runtimeApiVersion: "v1" })),
      listPodSandbox: unaryHandler(RuntimeService.method.listPodSandbox, async () => create(RuntimeService.method.listPodSandbox.output, { items: [...pods.values()] })),
      podSandboxStatus: unaryHandler(RuntimeService.method.podSandboxStatus, async (req) => {
        const p = pods.get(req.podSandboxId);
        if (p === undefined) throw notFound(`pod sandbox ${req.podSandboxId}`);
        return create(RuntimeService.method.podSandboxStatus.output, { status: p });
      }),
      listContainers: unaryHandler(RuntimeService.method.listContainers, async (req) =>
        create(RuntimeService.method.listContainers.output, { containers: [...criContainers.values()].filter((c) => req.filter?.id === undefined || req.filter.id === "" || c.id === req.filter.id) }),
      ),
      containerStatus: unaryHandler(RuntimeService.method.containerStatus, async (req) => {
        const c = criContainers.get(req.containerId);
        if (c === undefined) throw notFound(`container ${req.containerId}`);
        return create(RuntimeService.method.containerStatus.output, { status: { id: c.id, metadata: c.metadata, state: c.state, mounts: [{ containerPath: "/data", hostPath: "/srv/data", readonly: true }] } });
      }),
    });
    await bindServer(server, `unix://${sock}`, grpc.ServerCredentials.createInsecure());
    return sock;
  }

  it("lists workload containers, reads one with its pod, and resolves its layers to snapshot dirs", async () => {
    const rt = await connectContainerd({ socket: await start(), snapshotsDir: AGENT, timeoutMs: 3000 });
    try {
      assert.deepEqual((await rt.listContainers()).sort(), ["c1", "c2", "c3", "c4", "c5", "c6"]);
      assert.equal(await rt.inspect("sb1"), undefined, "a pod sandbox is never scored");
      assert.equal(await rt.inspect("nope"), undefined);

      const c = await rt.inspect("c1");
      assert.ok(c !== undefined);
      assert.equal(c.name, "web/app");
      assert.equal(c.state, "running");
      assert.equal(c.pid, 4242);
      assert.equal(c.imageId, config.digest, "the image id is the config digest");
      assert.equal(c.driver, "overlayfs");
      assert.equal(c.upperDir, `${AGENT}/snapshots/9/fs`);
      assert.deepEqual(c.lowerDirs, [`${AGENT}/snapshots/5/fs`, `${AGENT}/snapshots/4/fs`]);
      assert.deepEqual(c.mounts, [{ type: "bind", name: "", source: "/srv/data", destination: "/data", rw: false }]);
      assert.deepEqual(c.pod, { name: "web", namespace: "shop", uid: "u-1", sandboxId: "sb1", labels: { app: "web" }, annotations: { "team/owner": "payments" } });
      assert.equal(c.storageUnavailable, undefined);

      const img = await rt.resolveImage(c);
      assert.ok(img !== undefined);
      assert.equal(c.storageProblem, undefined);
      assert.deepEqual(img.tags, ["docker.io/shop/app:1"]);
      assert.deepEqual(img.layers.map((l) => [l.diffId, l.chainId, l.cacheId, l.dir, l.sizeBytes, l.createdBy]), [
        [diffIds[0], chains[0], "4", `${AGENT}/snapshots/4/fs`, 4096n, "ADD base.tar /"],
        [diffIds[1], chains[1], "5", `${AGENT}/snapshots/5/fs`, 4096n, "COPY app /app"],
      ]);
      assert.equal(img.historySource, "imagedb");
      assert.ok(namespaces.length > 0 && namespaces.every((n) => n === "k8s.io"), "every containerd call names the namespace");
    } finally {
      rt.close();
    }
  });

  it("says so when the snapshot chain is not the image's, and gives no directories", async () => {
    const rt = await connectContainerd({ socket: join(dir, "ctrd.sock"), snapshotsDir: AGENT, timeoutMs: 3000 });
    try {
      const c = await rt.inspect("c2");
      assert.ok(c !== undefined);
      assert.equal(c.state, "created", "no task: created");
      const img = await rt.resolveImage(c);
      assert.ok(img !== undefined);
      assert.match(c.storageProblem ?? "", /snapshot parents .* are not the image's chain ids/);
      assert.deepEqual(img.layers.map((l) => l.dir), ["", ""]);
    } finally {
      rt.close();
    }
  });

  it("never trusts a blob whose digest does not match: no layers, and why", async () => {
    const rt = await connectContainerd({ socket: join(dir, "ctrd.sock"), timeoutMs: 3000 });
    try {
      const c = await rt.inspect("c3");
      assert.ok(c !== undefined);
      assert.equal(c.state, "exited", "no task, CRI says exited");
      assert.equal(c.imageId, "");
      assert.match(c.storageUnavailable ?? "", /does not match its content/);
      assert.equal(await rt.resolveImage(c), undefined);
    } finally {
      rt.close();
    }
  });

  it("skips a container whose pod or snapshot vanished mid-scan", async () => {
    const rt = await connectContainerd({ socket: join(dir, "ctrd.sock"), timeoutMs: 3000 });
    try {
      assert.equal(await rt.inspect("c4"), undefined, "pod deleted");
      assert.equal(await rt.inspect("c5"), undefined, "snapshot removed");
    } finally {
      rt.close();
    }
  });

  it("lists an unknown snapshotter's layers without directories and says why", async () => {
    const rt = await connectContainerd({ socket: join(dir, "ctrd.sock"), timeoutMs: 3000 });
    try {
      const c = await rt.inspect("c6");
      assert.ok(c !== undefined);
      assert.equal(c.name, "c6", "not a CRI container: its id");
      assert.equal(c.pod, undefined);
      assert.equal(c.storageUnavailable, "snapshotter stargz is not overlayfs: layer directories unknown");
      assert.deepEqual([c.upperDir, c.lowerDirs], ["", []]);
      const img = await rt.resolveImage(c);
      assert.ok(img !== undefined);
      assert.deepEqual(img.layers.map((l) => [l.diffId, l.cacheId, l.dir]), [
        [diffIds[0], "", ""],
        [diffIds[1], "", ""],
      ]);
    } finally {
      rt.close();
    }
  });
});

describe("volumes from a container's OCI spec", () => {
  const SPEC = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
  const any = (v: unknown, typeUrl = SPEC) => ({ typeUrl, value: Buffer.from(typeof v === "string" ? v : JSON.stringify(v)) });

  it("keeps the bind mounts CRI asked for, not its sandbox files nor kernel filesystems", () => {
    const spec = {
      mounts: [
        { destination: "/proc", type: "proc", source: "proc", options: ["nosuid"] },
        { destination: "/etc/hosts", type: "bind", source: "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/hosts", options: ["rbind", "rw"] },
        { destination: "/dev/shm", type: "bind", source: "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm", options: ["rbind"] },
        { destination: "/data", type: "bind", source: "/srv/data", options: ["rbind", "rprivate", "rw"] },
        { destination: "/conf", source: "/etc/app", options: ["rbind", "ro"] },
      ],
    };
    assert.deepEqual(specMounts(any(spec), 10), [
      { source: "/srv/data", destination: "/data", rw: true },
      { source: "/etc/app", destination: "/conf", rw: false },
    ]);
    assert.deepEqual(specMounts(any({}), 10), [], "no mounts at all");
  });

  it("gives up (the caller asks CRI) on a spec that is not one, and bounds what it keeps", () => {
    assert.equal(specMounts(undefined, 10), undefined);
    assert.equal(specMounts(any({ mounts: [] }, "types.example.com/other"), 10), undefined);
    assert.equal(specMounts(any("{not json"), 10), undefined);
    assert.equal(specMounts(any({ mounts: "x" }), 10), undefined);
    assert.equal(specMounts(any({ mounts: [null] }), 10), undefined);
    assert.equal(specMounts(any(`{"mounts":[],"pad":"${"x".repeat(2 * 1024 * 1024)}"}`), 10), undefined, "a spec past 1 MiB is not parsed");
    const many = { mounts: Array.from({ length: 1000 }, (_, i) => ({ destination: `/v${i}`, type: "bind", source: `/s${i}`, options: [] })) };
    assert.equal(specMounts(any(many), 256)?.length, 256);
    const long = specMounts(any({ mounts: [{ destination: `/${"d".repeat(10_000)}`, type: "bind", source: "/s" }] }), 10);
    assert.equal(long?.[0]?.destination.length, 4096);
  });
});
