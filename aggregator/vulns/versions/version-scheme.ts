/** What each ecosystem's version order provides; its own file so the schemes need not import the index that lists them. */
export interface VersionScheme<P = unknown> {
  readonly name: string;
  /** undefined when the string is not a valid version in this scheme (never throws). */
  parse(v: string): P | undefined;
  /** <0, 0, >0 like a comparator. */
  compare(a: P, b: P): number;
}
