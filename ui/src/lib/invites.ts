// What the join-code list shows of a code and what an admin may do to it (tested in
// `invites.test.ts`).

import type { InviteView } from "./generated/InviteView";
import type { Key } from "./i18n/index.svelte";

/** The states the head reports, with their words. A state this version does not know (from a
 * newer head) reads as itself. */
const STATES: Record<string, Key> = {
  usable: "invites.usable",
  "used up": "invites.usedUp",
  expired: "invites.expired",
  withdrawn: "invites.withdrawn",
};

/** The words for a code's state, or null for a state without words here. */
export function stateKey(state: string): Key | null {
  return STATES[state] ?? null;
}

/** Uses as "used/total", or "N left" for a code made before the head recorded its total. */
export function usesText(invite: Pick<InviteView, "uses" | "uses_left">): { used: number; total: number } | { left: number } {
  if (invite.uses === 0) return { left: invite.uses_left };
  return { used: invite.uses - Math.min(invite.uses_left, invite.uses), total: invite.uses };
}

/** Whether withdrawing the code changes anything: only a code that still admits someone. */
export function canWithdraw(invite: Pick<InviteView, "state">): boolean {
  return invite.state === "usable";
}
