/**
 * The encoded size of a protobuf message, remembered per object: the aggregator measures the same
 * stored message for every page, watch stream and cap check it goes through, and stored messages
 * are replaced, never changed in place.
 */
import { toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";

const sizes = new WeakMap<object, number>();

export function encodedSize<D extends DescMessage>(schema: D, m: MessageShape<D>): number {
  let n = sizes.get(m);
  if (n === undefined) sizes.set(m, (n = toBinary(schema, m).length));
  return n;
}
