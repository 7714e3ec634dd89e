/**
 * os-release(5): KEY=value lines, values optionally in double quotes (with \" \\ \$ \` escapes)
 * or single quotes (literal); "#" starts a comment line.
 */

export interface OsRelease {
  id: string;
  /** "" when the file has no VERSION_ID (rolling releases such as Debian sid or Arch). */
  versionId: string;
  versionCodename?: string;
  prettyName?: string;
}

export function parseOsReleaseVars(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (m === null) continue;
    let v = m[2] ?? "";
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1).replace(/\\([\\"$`])/g, "$1");
    else if (v.length >= 2 && v.startsWith("'") && v.endsWith("'")) v = v.slice(1, -1);
    vars.set(m[1] ?? "", v);
  }
  return vars;
}

/** undefined when the text has no ID (it is not an os-release file). */
export function parseOsRelease(text: string): OsRelease | undefined {
  const vars = parseOsReleaseVars(text);
  const id = vars.get("ID");
  if (id === undefined || id === "") return undefined;
  const codename = vars.get("VERSION_CODENAME");
  const pretty = vars.get("PRETTY_NAME");
  return {
    id,
    versionId: vars.get("VERSION_ID") ?? "",
    ...(codename !== undefined && codename !== "" ? { versionCodename: codename } : {}),
    ...(pretty !== undefined && pretty !== "" ? { prettyName: pretty } : {}),
  };
}
