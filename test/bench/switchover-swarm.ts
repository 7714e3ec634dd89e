/**
 * The Swarm peer: a one-replica service on a single-node swarm bound to loopback only, host
 * networking (no ingress, no published port, `dnsrr` endpoints: the engine here runs without
 * iptables or a default bridge, and a host-network task needs neither), replaced by `service
 * update --image` with Swarm's only order that can work on one host port, stop-first. `close()`
 * removes the service and its tasks' containers, leaves the swarm and removes the gateway bridge
 * the swarm made, also after a failure halfway through `startSwarmService`.
 */
import type Docker from "dockerode";
import { DEMO_LABEL } from "../../cli/demo-images.js";
import { SERVICE_PORT_ENV } from "../../agent/actions/switchover/service-labels.js";
import { TEST_LABEL, waitFor } from "../harness/engine.js";
import type { Replaceable } from "./switchover-peers.js";

const GATEWAY_BRIDGE = "docker_gwbridge";
const SERVICE_ID_LABEL = "com.docker.swarm.service.id";
const NS_PER_MS = 1_000_000;

interface ServiceSpecView {
  TaskTemplate?: { ContainerSpec?: { Image?: string } };
}

/** Removes what a swarm run made; safe to call whatever was reached. */
async function teardown(docker: Docker, serviceId: string | undefined, joined: boolean, bridgeWasThere: boolean, log: (l: string) => void): Promise<void> {
  if (serviceId !== undefined) {
    await docker.getService(serviceId).remove().catch(() => undefined);
    // The tasks' containers go with their service; wait a little, then remove what is left.
    await waitFor("the swarm tasks' containers to go", async () => ((await docker.listContainers({ all: true, filters: { label: [`${SERVICE_ID_LABEL}=${serviceId}`] } })).length === 0 ? true : undefined), 15_000, 200).catch(() => undefined);
    for (const c of await docker.listContainers({ all: true, filters: { label: [`${SERVICE_ID_LABEL}=${serviceId}`] } }).catch(() => [])) {
      await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
    }
  }
  if (joined) {
    await docker.swarmLeave({ force: true }).catch((err: unknown) => log(`cannot leave the swarm: ${String(err)}`));
  }
  if (!bridgeWasThere) {
    await waitFor("the swarm's gateway bridge to be removable", async () => {
      const nets = await docker.listNetworks({ filters: { name: [GATEWAY_BRIDGE] } });
      const net = nets.find((n) => n.Name === GATEWAY_BRIDGE);
      if (net === undefined) return true;
      return docker.getNetwork(net.Id).remove().then(() => true, () => undefined);
    }, 10_000, 250).catch((err: unknown) => log(`cannot remove ${GATEWAY_BRIDGE}: ${String(err)}`));
  }
}

/**
 * Initialises the swarm (refusing to touch one this engine is already part of), starts the
 * service from `images[0]` on `port`, and returns it as a scenario.
 */
export async function startSwarmService(docker: Docker, images: readonly [string, string], port: number, swarmPort: number, log: (l: string) => void): Promise<Replaceable> {
  const info = (await docker.info()) as { Swarm?: { LocalNodeState?: string } };
  const state = info.Swarm?.LocalNodeState ?? "";
  if (state !== "inactive") throw new Error(`the engine's swarm state is ${JSON.stringify(state)}, not inactive: a swarm that is not this run's is left alone`);
  const bridgeWasThere = (await docker.listNetworks({ filters: { name: [GATEWAY_BRIDGE] } })).some((n) => n.Name === GATEWAY_BRIDGE);
  let joined = false;
  let serviceId: string | undefined;
  const close = () => teardown(docker, serviceId, joined, bridgeWasThere, log);
  try {
    // A failed init can leave the node half-joined: leaving is part of the cleanup either way.
    joined = true;
    await docker.swarmInit({ ListenAddr: `127.0.0.1:${swarmPort}`, AdvertiseAddr: "127.0.0.1", ForceNewCluster: false });
    const host = await docker.getNetwork("host").inspect();
    const created = (await docker.createService({
      Name: `sl-bench-swarm-${process.pid}`,
      Labels: { [TEST_LABEL]: String(process.pid) },
      TaskTemplate: {
        ContainerSpec: {
          Image: images[0],
          Env: [`${SERVICE_PORT_ENV}=${port}`],
          Init: true,
          StopGracePeriod: 10_000 * NS_PER_MS,
          Labels: { [TEST_LABEL]: String(process.pid), [DEMO_LABEL]: "test" },
        },
        Networks: [{ Target: (host as { Id: string }).Id }],
        RestartPolicy: { Condition: "any", Delay: 0, MaxAttempts: 0 },
      },
      Mode: { Replicated: { Replicas: 1 } },
      UpdateConfig: { Parallelism: 1, Delay: 0, Order: "stop-first", FailureAction: "pause", Monitor: 200 * NS_PER_MS },
      EndpointSpec: { Mode: "dnsrr" },
    } satisfies Docker.CreateServiceOptions)) as unknown as { id?: string; ID?: string };
    serviceId = created.id ?? created.ID;
    if (serviceId === undefined) throw new Error("the engine created a swarm service without saying its id");
    const svc = docker.getService(serviceId);
    let n = 0;
    return {
      name: "swarm_update",
      port,
      replace: async () => {
        const cur = (await svc.inspect()) as { Version: { Index: number }; Spec: ServiceSpecView & Record<string, unknown> };
        n++;
        const spec = cur.Spec;
        const cs = spec.TaskTemplate?.ContainerSpec;
        if (cs === undefined) throw new Error("the swarm service has no container spec");
        cs.Image = images[n % 2];
        await svc.update({ version: cur.Version.Index, ...spec });
      },
      settle: async () => {
        await waitFor(
          "the swarm update to complete",
          async () => {
            const s = (await svc.inspect()) as { UpdateStatus?: { State?: string; Message?: string } };
            const st = s.UpdateStatus?.State;
            if (st === "paused" || st?.startsWith("rollback") === true) throw new Error(`the swarm update ended ${st}: ${s.UpdateStatus?.Message ?? ""}`);
            return st === "completed" ? true : undefined;
          },
          60_000,
          50,
        );
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
