/**
 * Where a managed service's traffic goes: the seam between the switchover state machine and
 * whatever moves traffic. The agent's L4 proxy (tcp-proxy.ts) is the first implementation; Docker
 * network alias, Kubernetes Service and Swarm adapters implement the same interface.
 *
 * A service is reached on one stable address. Its backend is swapped atomically: connections
 * already forwarded stay with the backend they reached until they end (drain); new connections go
 * to the new backend. While a service is held (the gap of an exclusive switchover), new
 * connections wait, neither refused nor forwarded, up to a bound, and are forwarded when a
 * backend is swapped in.
 */

/** A place that serves the service: a container listening on host:port. */
export interface Backend {
  host: string;
  port: number;
  /** Who serves there (a container id): drains and statistics are per backend. */
  id: string;
}

export interface DrainResult {
  /** Connections to the backend that ended by themselves before the deadline. */
  drained: number;
  /** Connections still open at the deadline, closed then. */
  cut: number;
  waitedMs: number;
}

export interface ServiceTrafficStats {
  service: string;
  listen: string;
  backend: Backend | undefined;
  holding: boolean;
  /** Connections open now, per backend id. */
  open: Record<string, number>;
  accepted: number;
  /** Waiting now in the hold. */
  held: number;
  /** Refused: the hold was full or waited past its bound, or no backend could be reached. */
  refused: number;
  /** Closed by a drain deadline. */
  cut: number;
}

export interface TrafficRedirect {
  /** "proxy", "docker-alias", "kubernetes-service", … (shown in records and logs). */
  readonly kind: string;
  /**
   * Serves `service` on `listen` (host:port), forwarding to `backend`, or holding new connections
   * when there is none yet. Idempotent: called again with the same listen address it only sets
   * the backend; a different address for a known service is an error (remove it first).
   */
  ensure(service: string, listen: string, backend: Backend | undefined): Promise<void>;
  /** From now on new connections wait (up to the hold's bound) instead of being forwarded. */
  hold(service: string): void;
  /** Atomically makes `to` the backend for new and held connections; returns the previous one. */
  swap(service: string, to: Backend): Backend | undefined;
  /**
   * Waits until the connections forwarded to backend `backendId` have ended, up to `deadlineMs`;
   * those still open then are closed (cut).
   */
  drain(service: string, backendId: string, deadlineMs: number): Promise<DrainResult>;
  /** The backend new connections go to now (undefined while none is set). */
  backend(service: string): Backend | undefined;
  stats(): ServiceTrafficStats[];
  /** Stops serving the service (its listener closes; open connections are left to end). */
  remove(service: string): Promise<void>;
  /** Closes every listener and connection. */
  close(): Promise<void>;
}
