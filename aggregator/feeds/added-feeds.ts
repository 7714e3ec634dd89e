/**
 * Feeds added at run time (AdminService.AddFeed, e.g. by `shadowlayer demo`): the request checked
 * before anything is read, and the config kept in level so that a restarted aggregator reads the
 * feed again, as it does a `--feed` flag.
 */
import { isAbsolute } from "node:path";
import type { Level } from "level";
import { z } from "zod";
import { Code, ShadowError } from "../../common/errors.js";
import { keys } from "../store/keys.js";
import { checkSource, isUrl, KINDS, type FeedConfig, type FeedKind } from "./feed-config.js";

export interface AddedFeed {
  config: FeedConfig;
  /** Fixture records (the demo's), shown as such so nobody takes them for a live source. */
  demo: boolean;
}

/** Names go into level keys ("!" separates their parts) and tables: a short plain word. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * An AddFeed request as a feed config, or InvalidArgument saying what is wrong. A path must be
 * absolute: it names a file on the aggregator's host, whose working directory the caller cannot know.
 */
export function addedFeedOf(req: { name: string; kind: string; source: string; demo: boolean }): AddedFeed {
  if (!NAME.test(req.name)) throw new ShadowError(Code.InvalidArgument, `feed name ${JSON.stringify(req.name)}: expected 1-64 letters, digits, '.', '_' or '-'`);
  const kind = KINDS.find((k) => k === req.kind);
  if (kind === undefined) throw new ShadowError(Code.InvalidArgument, `feed kind ${JSON.stringify(req.kind)}: expected one of ${KINDS.join(", ")}`);
  if (req.source === "") throw new ShadowError(Code.InvalidArgument, "feed source is required (an absolute path on the aggregator's host, or an https URL)");
  checkSource(req.source);
  if (!isUrl(req.source) && !isAbsolute(req.source)) {
    throw new ShadowError(Code.InvalidArgument, `feed source ${req.source}: a path must be absolute (it is read on the aggregator's host)`);
  }
  return { config: { name: req.name, kind, source: req.source }, demo: req.demo };
}

const stored = z.object({
  name: z.string().regex(NAME),
  kind: z.enum(KINDS as [FeedKind, ...FeedKind[]]),
  source: z.string().min(1),
  demo: z.boolean().default(false),
});

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The level write that keeps an added feed (part of the batch that makes its data current). */
export function addedFeedPut(a: AddedFeed): { type: "put"; key: string; value: Uint8Array } {
  const { name, kind, source } = a.config;
  return { type: "put", key: keys.feedConfig(name), value: enc.encode(JSON.stringify({ name, kind, source, demo: a.demo })) };
}

/** Every added feed kept in level; one that does not parse is skipped and reported through `bad`. */
export async function readAddedFeeds(db: Level<string, Uint8Array>, bad: (key: string, why: string) => void): Promise<AddedFeed[]> {
  const out: AddedFeed[] = [];
  for await (const [key, value] of db.iterator(keys.feedConfigRange)) {
    let parsed: z.infer<typeof stored>;
    try {
      parsed = stored.parse(JSON.parse(dec.decode(value)));
    } catch (err) {
      bad(key, err instanceof Error ? err.message : String(err));
      continue;
    }
    out.push({ config: { name: parsed.name, kind: parsed.kind, source: parsed.source }, demo: parsed.demo });
  }
  return out;
}
