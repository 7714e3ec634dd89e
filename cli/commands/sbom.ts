import type { Command } from "commander";
import { Code, ShadowError } from "../../common/errors.js";
import { action, out, runtime } from "../action.js";
import { containerCommand, type ClientFlags } from "../options.js";

export function registerSbom(program: Command): void {
  containerCommand(program, "sbom", "the container image's packages as CycloneDX 1.5 JSON, each component with its layer").action(action(sbom));
}

async function sbom(container: string, o: ClientFlags): Promise<void> {
  const { QueryService, cyclonedx, query } = await runtime();
  const r = await query(o, QueryService.method.getInventory, { container });
  if (r.graph === undefined || r.inventory === undefined) throw new ShadowError(Code.NotFound, `no inventory for ${container}`);
  out(JSON.stringify(await cyclonedx(r.graph, r.inventory), null, 2));
}
