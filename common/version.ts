/** Kept in step with package.json by the release script; sent in the agent's Hello. */
export const VERSION = "0.1.0";
