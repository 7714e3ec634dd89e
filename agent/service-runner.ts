/**
 * The agent's parts start and stop through one list: in order on the way up, in reverse on the
 * way down, so a part never outlives what it uses (the state database is first up, last down).
 */
import type { Logger } from "../common/log.js";

/** One part of the agent with a life of its own. */
export interface Service {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** A list of started services, stopped together. */
export interface RunningServices {
  /** Stops every service in reverse order; a failing stop is logged and the rest still stop. */
  stop(): Promise<void>;
}

/**
 * Starts `services` one after another. If one fails to start, those already started are
 * stopped (in reverse) and the start error is rethrown.
 */
export async function startServices(services: readonly Service[], log: Logger): Promise<RunningServices> {
  const started: Service[] = [];
  const stopAll = async () => {
    for (const s of started.splice(0).reverse()) {
      try {
        await s.stop();
      } catch (err) {
        log.warn({ service: s.name, err: String(err) }, "service did not stop cleanly");
      }
    }
  };
  for (const s of services) {
    try {
      await s.start();
    } catch (err) {
      log.debug({ service: s.name, err: String(err) }, "service failed to start; stopping those started");
      await stopAll();
      throw err;
    }
    started.push(s);
  }
  return { stop: stopAll };
}

/** A service from two functions, for parts that are not classes of their own. */
export function service(name: string, start: () => Promise<void> | void, stop: () => Promise<void> | void = () => undefined): Service {
  return {
    name,
    start: async () => {
      await start();
    },
    stop: async () => {
      await stop();
    },
  };
}

/**
 * A part with start and stop of its own, as a service. A failed start is followed by a stop: the
 * part may have begun something (a child process, a timer) before it failed.
 */
export function partService(name: string, part: { start(): Promise<void>; stop(): Promise<void> | void }): Service {
  return service(
    name,
    async () => {
      try {
        await part.start();
      } catch (err) {
        await part.stop();
        throw err;
      }
    },
    () => part.stop(),
  );
}
