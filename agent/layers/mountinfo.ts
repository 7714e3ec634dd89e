/**
 * Parses /proc/<pid>/mountinfo (proc(5)): "id parent major:minor root mountpoint options
 * [optional...] - fstype source superoptions". Paths use octal escapes (\040 for a space).
 */

export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
  superOptions: string;
}

export interface OverlayRoot {
  /** lowerdir entries, top first, as the kernel shows them. */
  lowerDirs: string[];
  upperDir: string;
  workDir: string;
}

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep < 0 || f.length < sep + 4) continue;
    out.push({
      mountPoint: unescape(f[4] ?? ""),
      fsType: f[sep + 1] ?? "",
      source: unescape(f[sep + 2] ?? ""),
      superOptions: f.slice(sep + 3).join(" "),
    });
  }
  return out;
}

/** Splits on `sep` where it is not escaped with a backslash; escapes stay in the parts. */
function splitEscaped(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = "";
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch === "\\" && i + 1 < s.length) {
      cur += ch + s[i + 1];
      i++;
    } else if (ch === sep) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

/** Resolves backslash escapes ("l\\:5" -> "l:5"). */
function unbackslash(s: string): string {
  return s.replace(/\\(.)/g, "$1");
}

/** Classic "a:b::data" lowerdir: "::" starts data-only layers, which are not part of the view. */
function classicLowers(v: string): string[] {
  const parts = splitEscaped(v, ":");
  const end = parts.indexOf("");
  return (end < 0 ? parts : parts.slice(0, end)).map(unbackslash);
}

/** The overlay mounted at "/", or undefined when the root is not overlayfs. */
export function overlayRoot(entries: MountEntry[]): OverlayRoot | undefined {
  // The last mount on "/" is the visible one.
  const root = [...entries].reverse().find((e) => e.mountPoint === "/");
  if (root === undefined || root.fsType !== "overlay") return undefined;
  const res: OverlayRoot = { lowerDirs: [], upperDir: "", workDir: "" };
  for (const opt of splitEscaped(unescape(root.superOptions), ",")) {
    const eq = opt.indexOf("=");
    if (eq < 0) continue;
    const k = opt.slice(0, eq);
    const v = opt.slice(eq + 1);
    // Newer kernels may show each lower as its own "lowerdir+" option.
    const plain = () => unbackslash(v);
    if (k === "lowerdir") res.lowerDirs.push(...classicLowers(v));
    else if (k === "lowerdir+") res.lowerDirs.push(plain());
    else if (k === "upperdir") res.upperDir = plain();
    else if (k === "workdir") res.workDir = plain();
  }
  return res;
}
