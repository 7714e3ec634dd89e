/**
 * What a container controls (image history, executable paths, argv, process and layer names)
 * reaches a person's terminal only through here. A raw ESC could retitle the window, clear the
 * screen or rewrite what was printed before; a C1 control (U+0080-U+009F) is a second way to start
 * such a sequence; a bidi override or isolate reorders what the line shows. Each is printed as
 * visible text (`\x1b`, `\x9b`, `\u202e`) so the operator sees that something was there; line
 * breaks and tabs too (`\n`, `\r`, `\t`), as every table row and tree line is one line. Everything
 * else, wide characters included, is left as it is. A backslash is not doubled: `\x1b` in the
 * output is either an escaped ESC or those four characters, and both are harmless.
 *
 * JSON output (`--json`) does not pass through here: consumers need the exact strings, and
 * JSON.stringify already writes every C0 control (ESC included) as `\u00XX`, so no escape sequence
 * can start from it.
 */

/** General category Cc (C0, DEL, C1) and the Unicode Bidi_Control set (U+061C, U+200E/F, U+202A-E, U+2066-9). */
const UNSAFE = /[\p{Cc}\p{Bidi_Control}]/gu;

const NAMED: Readonly<Record<string, string>> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function visible(c: string): string {
  const named = NAMED[c];
  if (named !== undefined) return named;
  const n = c.codePointAt(0) ?? 0;
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, "0")}` : `\\u${n.toString(16).padStart(4, "0")}`;
}

/** `s` with every control and bidi control character written out as visible text. */
export function terminalSafe(s: string): string {
  return s.replace(UNSAFE, visible);
}

/**
 * A template tag for a line of output: the literal text as written (the program's own), every
 * interpolated value through terminalSafe. `safeLine\`${name} removed\``.
 */
export function safeLine(literals: TemplateStringsArray, ...values: unknown[]): string {
  let line = literals[0] ?? "";
  values.forEach((v, i) => {
    line += terminalSafe(String(v)) + (literals[i + 1] ?? "");
  });
  return line;
}
