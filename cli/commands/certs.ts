import type { Command } from "commander";
import { action, out, runtime } from "../action.js";
import { dataDirOption } from "../options.js";

export function registerCerts(program: Command): void {
  const certs = program.command("certs").description("manage the mTLS certificates");
  dataDirOption(certs.command("init").description("make a CA, the aggregator's certificate, one per agent node, and a reader and an admin certificate for the CLI (existing files are kept)"))
    .option("--tls-dir <dir>", "where to write them (default: <data-dir>/tls)")
    .option("--node <name...>", "node names to make agent certificates for (env SHADOWLAYER_NODE; default: this host's name)")
    .option("--san <name...>", "extra DNS names or IPs for the aggregator certificate")
    .option("--detector", "also a detector certificate (detector.crt, detector.key): what Falco or falcosidekick presents to the aggregator's alert intake with --falco-mtls")
    .option("--json", "machine-readable result")
    .action(action(init));
}

async function init(o: { dataDir?: string; tlsDir?: string; node?: string[]; san?: string[]; detector?: boolean; json?: boolean }): Promise<void> {
  const { initCerts, resolveCertsConfig } = await runtime();
  const c = resolveCertsConfig(o, process.env);
  const r = await initCerts(c.tlsDir, { nodes: c.nodes, sans: c.sans, detector: o.detector === true });
  if (o.json) out(JSON.stringify(r));
  else {
    out(`certificates in ${r.dir}\n  created: ${r.created.join(", ") || "-"}\n  kept:    ${r.kept.join(", ") || "-"}`);
    // The pre-roles pair still works as a reader; say so, so that nobody keeps relying on it for admin.
    if (r.obsolete.length > 0) out(`  no longer used by the CLI: ${r.obsolete.join(", ")} (an older all-purpose certificate, now admitted as a reader only; remove it once nothing uses it)`);
  }
}
