import type { Command } from "commander";
import { Code, ShadowError } from "../../common/errors.js";
import { action, out, runtime } from "../action.js";
import { containerCommand, type ClientFlags } from "../options.js";

export function registerSbom(program: Command): void {
  containerCommand(program, "sbom", "the container image's packages as CycloneDX 1.5 JSON, each component with its layer").action(action(sbom));
}

async function sbom(container: string, o: ClientFlags): Promise<void> {
  const { QueryService, cyclonedx, listAll } = await runtime();
  const { first, items: packages } = await listAll(o, QueryService.method.getInventory, { container }, (p) => p.inventory?.packages ?? []);
  if (first.graph === undefined || first.inventory === undefined) throw new ShadowError(Code.NotFound, `no inventory for ${container}`);
  out(JSON.stringify(await cyclonedx(first.graph, { ...first.inventory, packages }), null, 2));
}
