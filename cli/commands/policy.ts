import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { clientOptions, type ClientFlags, type JsonFlags } from "../options.js";
import { safeLine } from "../terminal-safe.js";

/** `policy list|set|delete`: per-environment thresholds, through AdminService (the admin certificate). */
export function registerPolicy(program: Command): void {
  const policy = program.command("policy").description("per-environment thresholds (rebuild, switch), selected by container labels or namespace; needs the admin certificate");
  clientOptions(policy.command("list").description("the policies, in the order they are tried")).option("--json", "JSON array").action(action(list));
  clientOptions(policy.command("set").argument("<name>", "policy name").description("create or replace a policy; scores are recomputed at once"))
    .requiredOption("--rebuild <risk>", "risk (0-100) at which a shadow rebuild is scheduled")
    .requiredOption("--switch <risk>", "risk (0-100) at which the container is switched to its shadow")
    .option("--label <key=value...>", "container labels that select this policy (all must match)")
    .option("--namespace <ns>", "Kubernetes namespace that selects this policy")
    .option("--order <n>", "lower is tried first (default: 100)")
    .option("--switch-on-drift", "switch the container to its shadow at once on a drift detection (rebuilt on demand when none is ready), whatever the risk")
    .action(action(set));
  clientOptions(policy.command("delete").argument("<name>", "policy name").description("remove a policy (the default policy stays)")).action(action(remove));
}

async function list(o: JsonFlags): Promise<void> {
  const { AdminService, listAll, policyJson, renderTable } = await runtime();
  const { items: policies } = await listAll(o, AdminService.method.listPolicies, {}, (p) => p.policies);
  if (o.json) out(JSON.stringify(policies.map(policyJson), null, 2));
  else
    out(
      renderTable(
        ["NAME", "ORDER", "SELECTOR", "REBUILD", "SWITCH", "ON DRIFT"],
        policies.map((p) => [p.name, String(p.order), [...Object.entries(p.labels).map(([k, v]) => `${k}=${v}`), ...(p.namespace ? [`namespace=${p.namespace}`] : [])].join(",") || "*", String(p.rebuildThreshold), String(p.switchThreshold), p.switchOnDrift ? "switch" : "-"]),
      ),
    );
}

async function set(name: string, o: ClientFlags & { rebuild: string; switch: string; label?: string[]; namespace?: string; order?: string; switchOnDrift?: boolean }): Promise<void> {
  const { AdminService, policySetInput, query } = await runtime();
  // The policy schema is the aggregator's: loaded here, not for every command.
  const { policyFromInit } = await import("../../aggregator/index.js");
  const r = await query(o, AdminService.method.setPolicy, { policy: policyFromInit({ ...policySetInput(name, o), switch_on_drift: o.switchOnDrift === true }) });
  out(safeLine`policy ${r.name} set: rebuild at ${r.rebuildThreshold}, switch at ${r.switchThreshold}${r.switchOnDrift ? ", switch on drift" : ""}`);
}

async function remove(name: string, o: ClientFlags): Promise<void> {
  const { AdminService, query } = await runtime();
  await query(o, AdminService.method.deletePolicy, { name });
  out(safeLine`policy ${name} deleted`);
}
