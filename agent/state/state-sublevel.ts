/**
 * The type every part of the agent's state is written through: a string-keyed sublevel of the
 * one database (or any level database, in tests). Its own file so that the parts (spool,
 * inventory cache, journal) and the database that opens them do not import each other.
 */
import type { AbstractLevel } from "abstract-level";

export type StateSublevel<V> = AbstractLevel<string | Buffer | Uint8Array, string, V>;
