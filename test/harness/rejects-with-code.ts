/** Asserts that a promise rejects with a ShadowError of a given code (and message), returning it. */
import assert from "node:assert/strict";
import { Code, ShadowError } from "../../common/errors.js";

export async function rejectsWithCode(p: Promise<unknown>, code: Code, message?: RegExp): Promise<ShadowError> {
  const err = await p.then(
    () => assert.fail(`expected a rejection with ${code}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ShadowError, `not a ShadowError: ${String(err)}`);
  assert.equal(err.code, code, err.message);
  if (message !== undefined) assert.match(err.message, message);
  return err;
}
