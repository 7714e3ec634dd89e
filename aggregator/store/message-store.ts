/**
 * A kind of protobuf message kept in level by id, with all of them in memory: level is the truth,
 * the map is read back from it on open, so a restarted aggregator answers as before.
 */
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { Level } from "level";

export interface MessageKeys<T> {
  /** The level key of the message with this id. */
  key: (id: string) => string;
  /** The range holding every key of this kind. */
  range: { gt: string; lt: string };
  id: (m: T) => string;
}

export class MessageStore<Desc extends DescMessage> {
  private readonly byId = new Map<string, MessageShape<Desc>>();

  private constructor(
    private readonly db: Level<string, Uint8Array>,
    private readonly schema: Desc,
    private readonly k: MessageKeys<MessageShape<Desc>>,
  ) {}

  static async open<Desc extends DescMessage>(db: Level<string, Uint8Array>, schema: Desc, k: MessageKeys<MessageShape<Desc>>): Promise<MessageStore<Desc>> {
    const s = new MessageStore(db, schema, k);
    for await (const v of db.values(k.range)) {
      const m = fromBinary(schema, v);
      s.byId.set(k.id(m), m);
    }
    return s;
  }

  get size(): number {
    return this.byId.size;
  }

  get(id: string): MessageShape<Desc> | undefined {
    return this.byId.get(id);
  }

  all(): MessageShape<Desc>[] {
    return [...this.byId.values()];
  }

  /** Stores `m`, replacing the message of the same id. */
  async put(m: MessageShape<Desc>): Promise<void> {
    const id = this.k.id(m);
    await this.db.put(this.k.key(id), toBinary(this.schema, m));
    this.byId.set(id, m);
  }

  /** The deleted message, or undefined when there was none. */
  async delete(id: string): Promise<MessageShape<Desc> | undefined> {
    const m = this.byId.get(id);
    if (m === undefined) return undefined;
    await this.db.del(this.k.key(id));
    this.byId.delete(id);
    return m;
  }
}
