// What the jobs table shows of a job and what an admin may do to it (tested in `jobs.test.ts`).

import type { JobView } from "./generated/JobView";

/** A message's first line is cut to this many characters (the whole text stays available). */
export const LINE_MAX = 160;

/** The statuses of a job that has not ended yet. */
const LIVE = new Set(["PENDING", "RUNNING"]);

export interface ShortText {
  /** The first non-blank line, cut to `max` characters with an ellipsis when needed. */
  line: string;
  /** The whole text, trimmed. */
  full: string;
  /** Whether `line` leaves something out (more lines, or a cut line). */
  shortened: boolean;
}

/** The first non-blank line of `text`, at most `max` characters (the ellipsis included); null
 * for a missing or blank text. */
export function firstLine(text: string | null | undefined, max = LINE_MAX): ShortText | null {
  const full = (text ?? "").trim();
  if (!full) return null;
  const first = full.split(/\r\n|\r|\n/, 1)[0].trim();
  const chars = [...first];
  const cut = chars.length > max;
  const line = cut ? `${chars.slice(0, Math.max(0, max - 1)).join("").trimEnd()}…` : first;
  const more = first.length < full.length;
  return { line: more && !cut ? `${line} …` : line, full, shortened: cut || more };
}

/** What the jobs table says of a job: the head's one-line reason (for a job whose dependencies
 * did not install, the installer's error) where it has one, else the first line of Ray's
 * message; the whole message stays available. */
export function jobMessage(
  job: Pick<JobView, "message" | "reason">,
  max = LINE_MAX,
): ShortText | null {
  const short = firstLine(job.reason ?? job.message, max);
  if (!short) return null;
  const full = (job.message ?? "").trim() || short.full;
  return { line: short.line, full, shortened: short.shortened || full !== short.full };
}

/** Whether the admin view offers a Stop button for `job`: one that has not ended, and that Ray
 * can stop (Ray stops submitted jobs only, not drivers started with `ray.init()` elsewhere). */
export function canStop(job: Pick<JobView, "status" | "kind">): boolean {
  return LIVE.has(job.status) && job.kind !== "DRIVER";
}

/** Whether `job` has not ended yet (pending or running). */
export function isLive(job: Pick<JobView, "status">): boolean {
  return LIVE.has(job.status);
}
