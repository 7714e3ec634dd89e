/**
 * A Falco alert as Falco's `http_output` (with `json_output: true`) and falcosidekick's `webhook`
 * output post it, checked at the edge into a typed value. Falco writes `time`, `rule`,
 * `priority`, `source`, `hostname` and, unless configured away, `output`, `tags` and
 * `output_fields` (the fields the rule's output names, e.g. `container.id`); falcosidekick posts
 * the same object with a `uuid` added. A problem is reported with the field it is in
 * (`output_fields["container.id"]`), so whoever wrote the rule can find it.
 */
import { z } from "zod";
import { describeValue, expected, keyPath } from "../../common/parse-with-schema.js";

/** Falco's priorities, most severe first (its own order). */
export const FALCO_PRIORITIES = ["emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug"] as const;
export type FalcoPriority = (typeof FALCO_PRIORITIES)[number];

/** Falco spells them `Warning`, falcosidekick may lower-case them, Falco's own config takes `info`. */
export function parsePriority(text: string): FalcoPriority | undefined {
  const t = text.toLowerCase();
  if (t === "info") return "informational";
  return (FALCO_PRIORITIES as readonly string[]).includes(t) ? (t as FalcoPriority) : undefined;
}

/** True when `p` is `min` or more severe. */
export function atLeast(p: FalcoPriority, min: FalcoPriority): boolean {
  return FALCO_PRIORITIES.indexOf(p) <= FALCO_PRIORITIES.indexOf(min);
}

/** One alert, as the intake judges it. */
export interface FalcoAlert {
  rule: string;
  priority: FalcoPriority;
  time: Date;
  /** The container id as Falco names it: 12 hex digits, or the full 64 when `container.full_id` is there. */
  containerId: string;
  containerName?: string;
  /** Falco's whole output line; absent when `json_include_output_property` is false. */
  output?: string;
  source?: string;
  hostname?: string;
  /** falcosidekick's id for the event. */
  uuid?: string;
  tags: string[];
}

/** Why an alert was refused: the field (as a path into the posted JSON) and what is wrong there. */
export interface AlertProblem {
  field: string;
  message: string;
}

// Bounds on what one alert may carry: the body is bounded already, these keep a reason readable.
const MAX_RULE = 1024;
const MAX_TEXT = 32 * 1024;

/** Falco writes `2024-05-01T10:20:30.123456789Z`; falcosidekick RFC 3339 with any fraction and offset. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;

/** Falco's `container.id`: the first 12 hex digits of the runtime's id (`host` outside containers). */
const SHORT_ID = /^[0-9a-f]{12}$/;
const FULL_ID = /^[0-9a-f]{64}$/;

const text = (max: number) => z.string({ error: expected("a string") }).max(max, { error: `expected at most ${max} characters` });

const containerId = z
  .string({ error: expected("Falco's container id (12 hex digits); add %container.id to the rule's output or to append_output") })
  .refine((v) => v !== "host", { error: 'the event happened on the host ("host"), not in a container: nothing to switch' })
  .refine((v) => v === "host" || SHORT_ID.test(v) || FULL_ID.test(v), { error: (i) => `expected Falco's container id (12 or 64 hex digits), got ${describeValue(i.input)}` });

const schema = z.object({
  rule: text(MAX_RULE).min(1, { error: "expected the rule's name, got an empty string" }),
  priority: z
    .string({ error: expected(`one of ${FALCO_PRIORITIES.join(", ")}`) })
    .refine((v) => parsePriority(v) !== undefined, { error: (i) => `expected one of ${FALCO_PRIORITIES.join(", ")}, got ${describeValue(i.input)}` }),
  time: z.string({ error: expected("an RFC 3339 time") }).refine((v) => ISO_TIME.test(v) && !Number.isNaN(Date.parse(v)), { error: (i) => `expected an RFC 3339 time, got ${describeValue(i.input)}` }),
  output: text(MAX_TEXT).optional(),
  source: text(MAX_RULE).optional(),
  hostname: text(MAX_RULE).optional(),
  uuid: text(MAX_RULE).optional(),
  tags: z.array(text(MAX_RULE), { error: expected("an array of strings") }).max(256, { error: "expected at most 256 tags" }).optional(),
  output_fields: z.object(
    {
      "container.id": containerId,
      // Falco writes null for a field it could not resolve.
      "container.full_id": z.string({ error: expected("a string") }).nullable().optional(),
      "container.name": text(MAX_RULE).nullable().optional(),
    },
    { error: expected("an object (Falco's output_fields; is json_include_output_fields_property false?)") },
  ),
});

/**
 * Checks one posted value. Returns the alert, or the first problem with its field; the messages
 * show at most a short excerpt of what was sent.
 */
export function parseFalcoAlert(input: unknown): { alert: FalcoAlert } | { problem: AlertProblem } {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    return { problem: { field: "body", message: Array.isArray(input) ? "expected one alert (a JSON object), got an array: Falco and falcosidekick post one alert per request" : `expected a JSON object, got ${describeValue(input)}` } };
  }
  const r = schema.safeParse(input);
  if (!r.success) {
    const issue = r.error.issues[0];
    return { problem: { field: keyPath("", issue?.path ?? []) || "body", message: issue?.message ?? "invalid" } };
  }
  const a = r.data;
  const f = a.output_fields;
  const shortId = f["container.id"];
  // The full id, when the rule's output carries it and it is the same container, is the exact one.
  const full = f["container.full_id"];
  const id = typeof full === "string" && FULL_ID.test(full) && full.startsWith(shortId) ? full : shortId;
  const name = f["container.name"];
  return {
    alert: {
      rule: a.rule,
      priority: parsePriority(a.priority) ?? "debug",
      time: new Date(a.time),
      containerId: id,
      ...(typeof name === "string" && name !== "" ? { containerName: name } : {}),
      ...(a.output !== undefined ? { output: a.output } : {}),
      ...(a.source !== undefined ? { source: a.source } : {}),
      ...(a.hostname !== undefined ? { hostname: a.hostname } : {}),
      ...(a.uuid !== undefined ? { uuid: a.uuid } : {}),
      tags: a.tags ?? [],
    },
  };
}
