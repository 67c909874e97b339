// Whether a node's Python differs from the cluster's (tested in `python.test.ts`). Ray needs the
// same minor version on every node and accepts another patch: a node on 3.11.2 in a cluster on
// 3.11.7 works, and the admin sees it; one on another minor is refused by Ray.

/** How a node's Python differs from the cluster's: another patch of the same minor, another
 * minor, or null when it does not differ or either is not known. */
export type PythonDiff = "patch" | "minor" | null;

/** `3.11.7` as its parts; surrounding spaces and a `Python ` prefix are ignored. */
function parts(version: string): string[] {
  return version
    .trim()
    .replace(/^python\s*/i, "")
    .split(".")
    .filter((p) => p !== "");
}

export function pythonDiff(node: string | null | undefined, cluster: string | null | undefined): PythonDiff {
  const n = parts(node ?? "");
  const c = parts(cluster ?? "");
  if (n.length === 0 || c.length === 0) return null;
  if (n[0] !== c[0] || (n[1] ?? "") !== (c[1] ?? "")) return "minor";
  // A version without its patch (`3.11`) says nothing about the patch: not marked.
  if (n.length < 3 || c.length < 3) return null;
  return n.slice(2).join(".") === c.slice(2).join(".") ? null : "patch";
}

/** `3.11` of `3.11.7`, for the explanation of a minor mismatch. */
export function minorOf(version: string): string {
  return parts(version).slice(0, 2).join(".");
}
