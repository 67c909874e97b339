// The one thing the dashboard knows about where it runs: a `Backend`. The browser build talks
// HTTP + server-sent events to the head (`http.ts`); the desktop app talks Tauri IPC to its own
// process (`tauri.ts`), which adds `desktop`: this computer's worker. Nothing outside this
// directory imports a concrete backend.

import type { AgentView } from "../generated/AgentView";
import type { ClusterSnapshot } from "../generated/ClusterSnapshot";
import type { CommandReply } from "../generated/CommandReply";
import type { InviteReply } from "../generated/InviteReply";
import type { InviteRequest } from "../generated/InviteRequest";
import type { InviteView } from "../generated/InviteView";
import type { JobView } from "../generated/JobView";
import type { NodeEvent } from "../generated/NodeEvent";
import type { PauseRequest } from "../generated/PauseRequest";
import type { RevokeInviteReply } from "../generated/RevokeInviteReply";
import type { StopJobReply } from "../generated/StopJobReply";
import type { ComputerView } from "../generated/desktop/ComputerView";
import type { ContributionView } from "../generated/desktop/ContributionView";
import type { DesktopStatus } from "../generated/desktop/DesktopStatus";
import type { FieldProblem } from "../generated/desktop/FieldProblem";
import type { LogLine } from "../generated/desktop/LogLine";
import type { PolicySaved } from "../generated/desktop/PolicySaved";
import type { PolicyView } from "../generated/desktop/PolicyView";
import type { ProvisionView } from "../generated/desktop/ProvisionView";
import type { SecretView } from "../generated/desktop/SecretView";
import type { SensorsView } from "../generated/desktop/SensorsView";
import type { SettingsView } from "../generated/desktop/SettingsView";

export type {
  AgentView,
  ClusterSnapshot,
  CommandReply,
  ComputerView,
  ContributionView,
  DesktopStatus,
  FieldProblem,
  InviteReply,
  InviteRequest,
  InviteView,
  JobView,
  LogLine,
  NodeEvent,
  PauseRequest,
  PolicySaved,
  PolicyView,
  ProvisionView,
  RevokeInviteReply,
  SecretView,
  SensorsView,
  SettingsView,
  StopJobReply,
};

/** How long this computer pauses, from the tray or the window. */
export type LocalPause = "hour" | "tomorrow" | "indefinite" | "finish";

/** This computer, in the desktop app: its worker (or the cluster it hosts), joining, and the
 * app's settings, secrets and log. */
export interface DesktopApi {
  status(): Promise<DesktopStatus>;
  /** Follows the status (every change, and the provisioning's progress) until the returned
   * function is called. */
  watchStatus(onStatus: (s: DesktopStatus) => void): () => void;
  /** Joins the cluster of a join code; throws `BackendError` (`bad_code`, `join_failed`...). */
  join(code: string, name?: string): Promise<DesktopStatus>;
  /** Hosts a cluster on this computer (the head and its own worker). */
  host(): Promise<DesktopStatus>;
  /** A join code for the hosted cluster (the current one, or a new one with `fresh`). */
  hostInvite(fresh: boolean): Promise<InviteReply>;
  pause(kind: LocalPause): Promise<void>;
  resume(): Promise<void>;
  /** Sensors and contribution. */
  computer(): Promise<ComputerView>;
  settings(): Promise<SettingsView>;
  setSettings(s: SettingsView): Promise<SettingsView>;
  /** The politeness settings in force. */
  policy(): Promise<PolicyView>;
  /** Throws `BackendError("invalid")` with `problems` when a field is refused (nothing saved). */
  setPolicy(p: PolicyView): Promise<PolicySaved>;
  secrets(): Promise<SecretView[]>;
  addSecret(name: string, value: string): Promise<SecretView[]>;
  removeSecret(name: string): Promise<SecretView[]>;
  logs(lines: number): Promise<LogLine[]>;
}

/** A failure with a stable code (the head's error codes, plus `unreachable`) to translate;
 * `problems` name the refused fields of a form. */
export class BackendError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly problems: FieldProblem[] = [],
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
  /** The join codes the head made, newest first (never their secrets). */
  invites(): Promise<InviteView[]>;
  /** Withdraws a join code, by its id (`InviteView.id`): nobody joins with it from now on. */
  revokeInvite(id: string): Promise<RevokeInviteReply>;
  /** Asks Ray to stop a job, by its id (`JobView.id`). */
  stopJob(id: string): Promise<StopJobReply>;

  /** Present in the desktop app only. */
  readonly desktop?: DesktopApi;
}
