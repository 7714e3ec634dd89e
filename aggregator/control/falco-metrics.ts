/**
 * What the Falco intake did with each request, by outcome: in its stats and as a Prometheus
 * counter, every outcome present from the start (at 0) so that a dashboard or an alert on
 * `unauthenticated` works before the first one happens.
 */
import { Counter, Registry } from "prom-client";

export const FALCO_OUTCOMES = [
  /** A switchover was asked for and the control took it (counted when the control answers, even after the HTTP answer left). */
  "accepted",
  "filtered_priority",
  "filtered_rule",
  "unauthenticated",
  /** A valid certificate of a role the intake does not admit. */
  "forbidden",
  "malformed",
  "oversized",
  "unsupported_media_type",
  "wrong_method",
  "wrong_path",
  "unknown_container",
  /** A switchover already runs for the container, or it cannot be switched now (the control's FailedPrecondition). */
  "conflict",
  /** The control could not take the request (its error is logged). */
  "unavailable",
] as const;
export type FalcoOutcome = (typeof FALCO_OUTCOMES)[number];

export class FalcoIntakeMetrics {
  readonly registry: Registry;
  private readonly requests: Counter<"outcome">;
  private readonly counts = new Map<FalcoOutcome, number>(FALCO_OUTCOMES.map((o) => [o, 0]));

  /** On `registry` when given (the aggregator's), else on one of its own. */
  constructor(registry?: Registry) {
    this.registry = registry ?? new Registry();
    this.requests = new Counter({
      name: "shadowlayer_aggregator_falco_requests_total",
      help: "Requests to the Falco alert intake, by outcome (accepted, filtered_*, or why it was refused)",
      labelNames: ["outcome"],
      registers: [this.registry],
    });
    for (const o of FALCO_OUTCOMES) this.requests.inc({ outcome: o }, 0);
  }

  count(outcome: FalcoOutcome): void {
    this.counts.set(outcome, (this.counts.get(outcome) ?? 0) + 1);
    this.requests.inc({ outcome });
  }

  /** Every outcome with its count. */
  snapshot(): Record<FalcoOutcome, number> {
    return Object.fromEntries(this.counts) as Record<FalcoOutcome, number>;
  }
}
