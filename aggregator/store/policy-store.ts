/**
 * The policies an operator set (or the configuration seeded), kept in level and in memory. It
 * stores what it is given: checking a policy is the caller's job (the policy schema).
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Level } from "level";
import { PolicySchema, type Policy } from "../../proto/gen/shadowlayer/v1/vulns_pb.js";
import { keys } from "./keys.js";

export class PolicyStore {
  private readonly policies = new Map<string, Policy>();

  private constructor(private readonly db: Level<string, Uint8Array>) {}

  static async open(db: Level<string, Uint8Array>): Promise<PolicyStore> {
    const s = new PolicyStore(db);
    for await (const v of db.values(keys.policyRange)) {
      const p = fromBinary(PolicySchema, v);
      s.policies.set(p.name, p);
    }
    return s;
  }

  has(name: string): boolean {
    return this.policies.has(name);
  }

  all(): Policy[] {
    return [...this.policies.values()];
  }

  async put(p: Policy): Promise<void> {
    await this.db.put(keys.policy(p.name), toBinary(PolicySchema, p));
    this.policies.set(p.name, p);
  }

  /** False when there was no such policy. */
  async delete(name: string): Promise<boolean> {
    if (!this.policies.has(name)) return false;
    await this.db.del(keys.policy(name));
    this.policies.delete(name);
    return true;
  }
}
