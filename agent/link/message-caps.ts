/**
 * The one place where what a container (or its image) controls is cut before it leaves the agent:
 * argv, paths, names, labels, history steps, its process list, package fields. Every message
 * goes through `capMessage` before it is encoded; what was cut carries a `truncated` flag. The
 * caps are sized so that a graph at every cap at once still encodes well under the limit
 * (the link still measures each message and drops, and counts, one that does not fit).
 */
import type { AgentMessage } from "../../proto/gen/shadowlayer/v1/agent_pb.js";
import type { Layer, LayerGraph, Process } from "../../proto/gen/shadowlayer/v1/graph_pb.js";
import type { Detection, WindowSummary } from "../../proto/gen/shadowlayer/v1/telemetry_pb.js";
import type { ImageInventory, InventoryProblem, Package } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import type { SwitchoverRecord } from "../../proto/gen/shadowlayer/v1/switchover_pb.js";

/** What the aggregator accepts in one message: gRPC's default receive limit, which it keeps. */
export const MESSAGE_LIMIT_BYTES = 4 * 1024 * 1024;

/** One process's argv, in bytes (each argument counted with its 2 bytes of framing): enough to tell commands apart. */
export const ARGV_BYTES = 1024;
/** An executable, a file or a mount path; PATH_MAX is 4096, paths people read are far shorter. */
export const PATH_BYTES = 1024;
/** A name: container, process (comm is 16), package, version, label key, image reference. */
export const NAME_BYTES = 256;
/** Free text: a history step (a whole RUN line), a label value, a reason, a command's message. */
export const TEXT_BYTES = 2048;
/** Processes (and service names) listed in one graph, drift first: a container may fork without bound. */
export const MAX_PROCESSES = 500;
/** Labels kept per graph (the container's, and its pod's). */
export const MAX_LABELS = 128;
/** A pod's annotations kept per graph, and the bytes of each value. */
export const MAX_ANNOTATIONS = 64;
export const ANNOTATION_BYTES = 512;
/** Steps kept per switchover record (the aggregator keeps no more). */
export const MAX_RECORD_STEPS = 64;

/** Cuts strings and lists, remembering whether it cut anything. */
class Cutter {
  cut = false;

  str(s: string, max: number): string {
    // UTF-8 takes at most 3 bytes per UTF-16 unit: most strings need no byte count at all.
    if (s.length * 3 <= max || Buffer.byteLength(s) <= max) return s;
    this.cut = true;
    // The first `max` UTF-16 units hold at least `max` bytes: never encode more of a huge string.
    const b = Buffer.from(s.slice(0, max));
    let end = max;
    // Back off to the start of a character.
    while (end > 0 && ((b[end] ?? 0) & 0xc0) === 0x80) end--;
    return b.subarray(0, end).toString();
  }

  /** `o` with the listed string fields cut; `o` itself when none needed it. */
  fields<T extends object>(o: T, caps: { [K in keyof T]?: T[K] extends string ? number : never }): T {
    let copy: T | undefined;
    for (const k of Object.keys(caps) as Array<keyof T>) {
      const v = o[k];
      const max = caps[k];
      if (typeof v !== "string" || max === undefined) continue;
      const s = this.str(v, max);
      if (s !== v) (copy ??= { ...o })[k] = s as T[keyof T];
    }
    return copy ?? o;
  }

  argv(argv: readonly string[]): string[] | undefined {
    let room = ARGV_BYTES;
    const out: string[] = [];
    for (const a of argv) {
      if (room <= 2) {
        this.cut = true;
        break;
      }
      const s = this.str(a, room - 2);
      out.push(s);
      room -= Buffer.byteLength(s) + 2;
      if (s !== a) break;
    }
    return out.length === argv.length && out.every((s, i) => s === argv[i]) ? undefined : out;
  }
}

export interface Capped {
  message: AgentMessage;
  /** Something in it was cut. */
  truncated: boolean;
}

/** The message with every container-controlled value within its cap (the same object when nothing was cut). */
export function capMessage(m: AgentMessage): Capped {
  const b = m.body;
  let body: AgentMessage["body"] = b;
  let truncated = false;
  switch (b.case) {
    case "graphUpsert":
      if (b.value.graph !== undefined) {
        const graph = capGraph(b.value.graph);
        if (graph !== b.value.graph) body = { case: b.case, value: { ...b.value, graph } };
      }
      break;
    case "telemetry": {
      const t = b.value.body;
      if (t.case === "windows") {
        const windows = t.value.windows.map(capWindow);
        if (windows.some((w, i) => w !== t.value.windows[i])) body = { case: b.case, value: { ...b.value, body: { case: t.case, value: { ...t.value, windows } } } };
      } else if (t.case === "detection") {
        const d = capDetection(t.value);
        if (d !== t.value) body = { case: b.case, value: { ...b.value, body: { case: t.case, value: d } } };
      }
      break;
    }
    case "inventory": {
      const inv = capInventory(b.value);
      if (inv !== b.value) body = { case: b.case, value: inv };
      break;
    }
    case "commandResult": {
      const c = new Cutter();
      const r = c.fields(b.value, { message: TEXT_BYTES });
      const sw = b.value.switchover && capRecord(b.value.switchover);
      if (sw !== b.value.switchover) c.cut = true;
      if (c.cut) (body = { case: b.case, value: { ...r, ...(sw !== undefined ? { switchover: sw } : {}) } }), (truncated = true);
      break;
    }
    case "switchover": {
      const r = capRecord(b.value);
      if (r !== b.value) body = { case: b.case, value: r };
      break;
    }
    case "heartbeat": {
      // The agent's own text, but it quotes errors that may carry container-provided bytes.
      const c = new Cutter();
      const telemetry = b.value.telemetry && c.fields(b.value.telemetry, { execSourceReason: TEXT_BYTES });
      const link = b.value.link && c.fields(b.value.link, { lastError: TEXT_BYTES });
      if (c.cut) (body = { case: b.case, value: { ...b.value, telemetry, link } }), (truncated = true);
      break;
    }
    default:
      break;
  }
  if (body === b) return { message: m, truncated };
  return { message: { ...m, body }, truncated: true };
}

/** A graph within the caps, flagged `truncated` (and each cut process too) when anything was cut. */
export function capGraph(g: LayerGraph): LayerGraph {
  const c = new Cutter();
  const keep = keptProcesses(g);
  if (keep !== undefined) c.cut = true;
  const room = { services: MAX_PROCESSES };
  const layers = g.layers.map((l) => capLayer(c, l, keep, room));
  const labels = capMap(c, g.labels, MAX_LABELS, TEXT_BYTES);
  const podLabels = capMap(c, g.podLabels, MAX_LABELS, TEXT_BYTES);
  // Annotations carry whole documents (kubectl's last-applied-configuration): kept short.
  const podAnnotations = capMap(c, g.podAnnotations, MAX_ANNOTATIONS, ANNOTATION_BYTES);
  const top = c.fields(g, { containerName: NAME_BYTES, image: PATH_BYTES, state: NAME_BYTES, pod: NAME_BYTES, namespace: NAME_BYTES, podUid: NAME_BYTES, runtime: NAME_BYTES });
  const mountCheck = g.mountCheck && c.fields(g.mountCheck, { detail: TEXT_BYTES });
  if (!c.cut) return g;
  return { ...top, labels, podLabels, podAnnotations, layers, ...(mountCheck !== undefined ? { mountCheck } : {}), truncated: true };
}

/** At most `max` entries, keys NAME_BYTES and values `valueBytes` long; `m` itself when nothing is cut. */
function capMap(c: Cutter, m: Record<string, string>, max: number, valueBytes: number): Record<string, string> {
  const entries = Object.entries(m);
  let cut = entries.length > max;
  const capped = entries.slice(0, max).map(([k, v]) => {
    const ck = c.str(k, NAME_BYTES);
    const cv = c.str(v, valueBytes);
    if (ck !== k || cv !== v) cut = true;
    return [ck, cv] as const;
  });
  if (!cut) return m;
  c.cut = true;
  return Object.fromEntries(capped);
}

/** The processes kept when a graph lists more than MAX_PROCESSES (drift first); undefined: all. */
function keptProcesses(g: LayerGraph): Set<Process> | undefined {
  const all = g.layers.flatMap((l) => l.processes);
  if (all.length <= MAX_PROCESSES) return undefined;
  const ranked = [...all.filter((p) => p.drift), ...all.filter((p) => !p.drift)];
  return new Set(ranked.slice(0, MAX_PROCESSES));
}

/** A layer within the caps; `room` is what is left of the graph's service names. */
function capLayer(c: Cutter, l: Layer, keep: Set<Process> | undefined, room: { services: number }): Layer {
  const before = c.cut;
  c.cut = false;
  const processes = (keep === undefined ? l.processes : l.processes.filter((p) => keep.has(p))).map((p) => capProcess(c, p));
  const services = l.services.slice(0, room.services).map((s) => c.str(s, NAME_BYTES));
  if (services.length < l.services.length) c.cut = true;
  room.services -= services.length;
  const top = c.fields(l, { name: TEXT_BYTES, createdBy: TEXT_BYTES, mountPoint: PATH_BYTES, source: PATH_BYTES });
  const changed = c.cut || processes.length !== l.processes.length;
  c.cut ||= before;
  return changed ? { ...top, processes, services } : l;
}

function capProcess(c: Cutter, p: Process): Process {
  const own = new Cutter();
  const top = own.fields(p, { name: NAME_BYTES, exe: PATH_BYTES, driftReason: NAME_BYTES });
  const argv = own.argv(p.argv);
  if (!own.cut) return p;
  c.cut = true;
  return { ...top, ...(argv !== undefined ? { argv } : {}), truncated: true };
}

export function capWindow(w: WindowSummary): WindowSummary {
  const c = new Cutter();
  const top = c.fields(w, { containerName: NAME_BYTES });
  const layers = w.layers.map((l) => c.fields(l, { layerName: TEXT_BYTES }));
  return c.cut ? { ...top, layers, truncated: true } : w;
}

/** A switchover record within the caps: reasons and errors quote containers, Falco outputs and probes. */
export function capRecord(r: SwitchoverRecord): SwitchoverRecord {
  const c = new Cutter();
  const top = c.fields(r, {
    reason: TEXT_BYTES,
    error: TEXT_BYTES,
    recovery: TEXT_BYTES,
    containerName: NAME_BYTES,
    shadowContainerName: NAME_BYTES,
    shadowImage: PATH_BYTES,
    snapshotImage: PATH_BYTES,
    serviceAddress: NAME_BYTES,
  });
  const kept = r.steps.length > MAX_RECORD_STEPS ? [...r.steps.slice(0, MAX_RECORD_STEPS - 1), ...r.steps.slice(-1)] : r.steps;
  if (kept !== r.steps) c.cut = true;
  const steps = kept.map((st) => c.fields(st, { name: NAME_BYTES, state: NAME_BYTES, message: TEXT_BYTES }));
  return c.cut ? { ...top, steps } : r;
}

export function capDetection(d: Detection): Detection {
  const c = new Cutter();
  const out = c.fields(d, { path: PATH_BYTES, comm: NAME_BYTES, containerName: NAME_BYTES, layerId: PATH_BYTES, reason: NAME_BYTES });
  return c.cut ? { ...out, truncated: true } : d;
}

const PACKAGE_CAPS = { type: NAME_BYTES, name: NAME_BYTES, version: NAME_BYTES, sourceName: NAME_BYTES, sourceVersion: NAME_BYTES, path: PATH_BYTES } as const;
const PROBLEM_CAPS = { path: PATH_BYTES, reason: TEXT_BYTES } as const;

/** An inventory (or one chunk of it) within the caps; its size is left to chunking. */
export function capInventory(inv: ImageInventory): ImageInventory {
  const c = new Cutter();
  const packages: Package[] = inv.packages.map((p) => c.fields(p, PACKAGE_CAPS));
  const partial: InventoryProblem[] = inv.partial.map((p) => c.fields(p, PROBLEM_CAPS));
  const os = inv.os && c.fields(inv.os, { id: NAME_BYTES, versionId: NAME_BYTES, codename: NAME_BYTES, prettyName: NAME_BYTES });
  return c.cut ? { ...inv, packages, partial, ...(os !== undefined ? { os } : {}), truncated: true } : inv;
}
