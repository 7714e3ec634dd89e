/**
 * How a container declares a managed service (labels on the original; a shadow is created with
 * the original's labels, its ports swapped). With host networking an original and its shadow share
 * the loopback, so each listens on its own port, told to it in SHADOWLAYER_PORT; the stable
 * address is the agent proxy's. Example: `shadowlayer.service.address=127.0.0.1:8080`,
 * `shadowlayer.service.port=18080`, `shadowlayer.service.shadow-port=18081`, and a command that
 * listens on `127.0.0.1:$SHADOWLAYER_PORT`.
 */
export const SERVICE_LABELS = {
  /** The stable address (host:port) clients use; the agent's proxy listens there. */
  address: "shadowlayer.service.address",
  /** The loopback port this container listens on (its SHADOWLAYER_PORT). */
  port: "shadowlayer.service.port",
  /** The port its shadow will listen on (the two alternate from one switchover to the next). */
  shadowPort: "shadowlayer.service.shadow-port",
  /** Health probe when the image has no HEALTHCHECK: `tcp` (default) or `http:/path`. */
  health: "shadowlayer.service.health",
  /** `exclusive` or `shared`: overrides the mode chosen from the mounts. */
  mode: "shadowlayer.switch.mode",
} as const;

/** The environment variable that carries the port a service container must listen on. */
export const SERVICE_PORT_ENV = "SHADOWLAYER_PORT";
