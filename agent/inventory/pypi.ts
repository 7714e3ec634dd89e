/**
 * Python distributions installed by pip or by a distribution package: `<name>.dist-info/METADATA`
 * (wheels) and `<name>.egg-info/PKG-INFO` or a single-file `<name>.egg-info` (setuptools and
 * distutils). Both are RFC 822 headers followed by a body; only `Name:` and `Version:` matter.
 */
import { normalizePypiName } from "../../common/package-names.js";
import type { FileParse } from "./package-record.js";

export { normalizePypiName };

export function parsePythonMetadata(text: string): FileParse {
  if (text.includes("\0")) return { problem: "binary data (NUL byte)" };
  let name: string | undefined;
  let version: string | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "") break; // end of the headers
    const m = /^([A-Za-z0-9][A-Za-z0-9-]*):\s*(.*)$/.exec(line);
    if (m === null) continue; // continuation lines and oddities: not the two headers we read
    const key = (m[1] ?? "").toLowerCase();
    const value = (m[2] ?? "").trim();
    if (key === "name" && name === undefined) name = value;
    else if (key === "version" && version === undefined) version = value;
  }
  if (name === undefined || name === "" || version === undefined || version === "") {
    return { problem: `no ${name === undefined || name === "" ? "Name" : "Version"} header` };
  }
  if (/\s/.test(version) || name.includes("\uFFFD")) return { problem: `bad Name/Version: ${JSON.stringify(`${name} ${version}`.slice(0, 60))}` };
  const normalized = normalizePypiName(name);
  if (!/^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/.test(normalized)) return { problem: `bad Name: ${JSON.stringify(name.slice(0, 40))}` };
  return { pkg: { type: "pypi", name: normalized, version } };
}
