/**
 * The demo's feed: the advisories shipped in demo-advisories.ts written out under the data dir
 * (where `up`'s aggregator, on this host, can read them) and added to the aggregator as two feeds
 * marked demo, through AdminService.AddFeed with the admin certificate, as `policy set` is sent;
 * and the demo's policy, which rebuilds the demo's containers at the risk that advisory gives.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { FeedStatus, Policy } from "../proto/gen/shadowlayer/v1/vulns_pb.js";
import { AdminService } from "../proto/gen/shadowlayer/v1/query_pb.js";
import { query } from "./client.js";
import { resolveClientConfig } from "./config.js";
import { DEMO_ADVISORY, DEMO_KEV_CATALOGUE, DEMO_OSV_RECORD } from "./demo-advisories.js";
import { DEMO_LABEL } from "./demo-images.js";
import type { ClientFlags } from "./options.js";

/** The names the demo's feeds are added under (an add replaces a feed of the same name). */
export const DEMO_FEEDS = { osv: "demo-osv", kev: "demo-kev" } as const;

/**
 * Debian's record carries no CVSS score and no NVD feed is loaded, so the threat is an assumed
 * 5.0 severity x 0.9 for a KEV entry with a fix: 45, under the default policy's rebuild threshold
 * (60). The demo's containers (labelled DEMO_LABEL=demo) get a policy of their own that rebuilds
 * at 40 and switches at 45, set openly (`shadowlayer policy list` shows it), so the rebuild and
 * then the switchover to the rebuilt shadow follow with no flag.
 */
export const DEMO_POLICY = { name: "shadowlayer-demo", labels: { [DEMO_LABEL]: "demo" }, rebuildThreshold: 40, switchThreshold: 45, order: 10 } as const;

export interface DemoFeedFiles {
  /** A directory of OSV records (the one record). */
  osv: string;
  /** A KEV catalogue of one entry. */
  kev: string;
}

/** Writes the records under `<dataDir>/demo-feed/` (absolute paths: the aggregator reads them). */
export async function writeDemoFeed(dataDir: string): Promise<DemoFeedFiles> {
  const dir = join(resolve(dataDir), "demo-feed");
  const files = { osv: join(dir, "osv"), kev: join(dir, "kev.json") };
  await mkdir(files.osv, { recursive: true, mode: 0o700 });
  await writeFile(join(files.osv, `${DEMO_ADVISORY}.json`), `${JSON.stringify(DEMO_OSV_RECORD, null, 2)}\n`);
  await writeFile(files.kev, `${JSON.stringify(DEMO_KEV_CATALOGUE, null, 2)}\n`);
  return files;
}

/**
 * Writes the records, adds both feeds and sets the demo's policy; resolves to the demo feeds'
 * statuses and the policy. Rejects (with the client's sentence) when no aggregator answers, the
 * certificate is not an admin's, or the aggregator cannot read the files (it runs on another host).
 */
export async function loadDemoFeed(flags: ClientFlags): Promise<{ feeds: FeedStatus[]; policy: Policy }> {
  const files = await writeDemoFeed(resolveClientConfig(flags, process.env).dataDir);
  const add = (name: string, kind: string, source: string) => query(flags, AdminService.method.addFeed, { name, kind, source, demo: true }, { deadlineMs: 60_000 });
  await add(DEMO_FEEDS.osv, "osv", files.osv);
  const { feeds } = await add(DEMO_FEEDS.kev, "kev", files.kev);
  const policy = await query(flags, AdminService.method.setPolicy, { policy: { ...DEMO_POLICY, labels: { ...DEMO_POLICY.labels } } });
  return { feeds: feeds.filter((f) => f.demo), policy };
}
