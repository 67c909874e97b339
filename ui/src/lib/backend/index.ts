// The one thing the dashboard knows about where it runs: a `Backend`. The browser build talks
// HTTP + server-sent events to the head (`http.ts`); the desktop app talks Tauri IPC to its own
// process (`tauri.ts`), which adds `desktop`: this computer's worker. Nothing outside this
// directory imports a concrete backend.

import type { AgentView } from "../generated/AgentView";
import type { ClusterSnapshot } from "../generated/ClusterSnapshot";
import type { CommandReply } from "../generated/CommandReply";
import type { InviteReply } from "../generated/InviteReply";
import type { InviteRequest } from "../generated/InviteRequest";
import type { NodeEvent } from "../generated/NodeEvent";
import type { PauseRequest } from "../generated/PauseRequest";
import type { DesktopStatus } from "../generated/desktop/DesktopStatus";
import type { SettingsView } from "../generated/desktop/SettingsView";

export type {
  AgentView,
  ClusterSnapshot,
  CommandReply,
  DesktopStatus,
  InviteReply,
  InviteRequest,
  NodeEvent,
  PauseRequest,
  SettingsView,
};

/** How long this computer pauses, from the tray or the window. */
export type LocalPause = "hour" | "tomorrow" | "indefinite" | "finish";

/** This computer, in the desktop app: its worker, joining, and the app's settings. */
export interface DesktopApi {
  status(): Promise<DesktopStatus>;
  /** Follows the status (every change) until the returned function is called. */
  watchStatus(onStatus: (s: DesktopStatus) => void): () => void;
  /** Joins the cluster of a join code; throws `BackendError` (`bad_code`, `join_failed`...). */
  join(code: string, name?: string): Promise<DesktopStatus>;
  pause(kind: LocalPause): Promise<void>;
  resume(): Promise<void>;
  settings(): Promise<SettingsView>;
  setSettings(s: SettingsView): Promise<SettingsView>;
}

/** A failure with a stable code (the head's error codes, plus `unreachable`) to translate. */
export class BackendError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "BackendError";
  }
}

/** What a live connection reports; `lost` means it is retrying by itself. */
export type LinkState = "connecting" | "open" | "lost";

export interface WatchHandlers {
  /** Every node's state as the control plane knows it (fast: on every change). */
  agents(agents: AgentView[]): void;
  /** The whole snapshot, Ray's side included (every couple of seconds). */
  cluster(snapshot: ClusterSnapshot): void;
  /** A state change the head recorded. */
  node?(event: NodeEvent): void;
  link(state: LinkState): void;
}

export interface Backend {
  /** The snapshot now. */
  snapshot(): Promise<ClusterSnapshot>;
  /** Follows the cluster until the returned function is called; reconnects by itself. */
  watch(handlers: WatchHandlers): () => void;

  /** Whether admin actions are available now (signed in, or trusted by the platform). */
  isAdmin(): boolean;
  /** Checks an admin token and keeps it for this session; throws `BackendError("unauthorized")`. */
  signIn(token: string): Promise<void>;
  /** Checks a token kept from earlier in this session, if any; false when there is none. */
  restoreSession(): Promise<boolean>;
  signOut(): void;

  pause(node: string, request: PauseRequest): Promise<CommandReply>;
  resume(node: string): Promise<CommandReply>;
  invite(request: InviteRequest): Promise<InviteReply>;

  /** Present in the desktop app only. */
  readonly desktop?: DesktopApi;
}
