// The desktop app's backend: Tauri IPC to the app's own process, which runs this computer's
// worker and reads the cluster from the control plane with the node's credential. Admin
// actions belong to the head's dashboard; here they answer `unsupported`.

import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type { CommandError } from "../generated/desktop/CommandError";
import { poll } from "../poll";
import {
  BackendError,
  type Backend,
  type ClusterSnapshot,
  type CommandReply,
  type ComputerView,
  type DesktopApi,
  type DesktopStatus,
  type InviteReply,
  type InviteView,
  type LocalPause,
  type LogLine,
  type PolicySaved,
  type PolicyView,
  type ProvisionView,
  type RevokeInviteReply,
  type SecretView,
  type SettingsView,
  type StopJobReply,
  type WatchHandlers,
} from "./index";

/** Every second: the control plane's snapshot is small, and the app asks only while open. */
const POLL_MS = 1000;

async function call<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(cmd, args);
  } catch (e) {
    const err = e as Partial<CommandError> | string;
    if (typeof err === "object" && err && typeof err.code === "string") {
      throw new BackendError(err.code, err.message ?? err.code, err.problems ?? []);
    }
    throw new BackendError("internal", String(e));
  }
}

const unsupported = () =>
  Promise.reject(new BackendError("unsupported", "admin actions are on the head's dashboard"));

class Desktop implements DesktopApi {
  status(): Promise<DesktopStatus> {
    return call("desktop_status");
  }

  watchStatus(onStatus: (s: DesktopStatus) => void): () => void {
    let stopped = false;
    let last: DesktopStatus | null = null;
    const unlisten: (() => void)[] = [];
    const show = (s: DesktopStatus) => {
      last = s;
      if (!stopped) onStatus(s);
    };
    this.status().then(show, () => {});
    const follow = <T>(event: string, on: (payload: T) => void) =>
      listen<T>(event, (e) => on(e.payload)).then((u) => {
        if (stopped) u();
        else unlisten.push(u);
      });
    follow<DesktopStatus>("flotilla://status", show);
    // The provisioning's steps and bytes come between the status's once-a-second updates.
    follow<ProvisionView>("flotilla://progress", (progress) => {
      if (last && last.phase !== "running") show({ ...last, progress });
    });
    return () => {
      stopped = true;
      unlisten.forEach((u) => u());
    };
  }

  join(code: string, name?: string): Promise<DesktopStatus> {
    return call("join", { code, name: name || null });
  }

  host(): Promise<DesktopStatus> {
    return call("host");
  }

  hostInvite(fresh: boolean): Promise<InviteReply> {
    return call("host_invite", { fresh });
  }

  computer(): Promise<ComputerView> {
    return call("computer");
  }

  policy(): Promise<PolicyView> {
    return call("policy");
  }

  setPolicy(policy: PolicyView): Promise<PolicySaved> {
    return call("set_policy", { policy });
  }

  secrets(): Promise<SecretView[]> {
    return call("secrets");
  }

  addSecret(name: string, value: string): Promise<SecretView[]> {
    return call("add_secret", { name, value });
  }

  removeSecret(name: string): Promise<SecretView[]> {
    return call("remove_secret", { name });
  }

  logs(lines: number): Promise<LogLine[]> {
    return call("logs", { lines });
  }

  pause(kind: LocalPause): Promise<void> {
    return call("pause_local", { kind });
  }

  resume(): Promise<void> {
    return call("resume_local");
  }

  settings(): Promise<SettingsView> {
    return call("settings");
  }

  setSettings(settings: SettingsView): Promise<SettingsView> {
    return call("set_settings", { settings });
  }
}

export class TauriBackend implements Backend {
  readonly desktop = new Desktop();

  snapshot(): Promise<ClusterSnapshot> {
    return call("cluster");
  }

  watch(h: WatchHandlers): () => void {
    h.link("connecting");
    // A hidden window (closed to the tray) asks nothing: the app stays quiet in the tray.
    const p = poll(
      async (live) => {
        try {
          const s = await this.snapshot();
          if (!live()) return;
          h.link("open");
          h.agents(s.agents);
          h.cluster(s);
        } catch {
          if (live()) h.link("lost");
        }
      },
      POLL_MS,
      () => document.hidden,
    );
    return p.stop;
  }

  isAdmin(): boolean {
    return false;
  }

  signIn(): Promise<void> {
    return unsupported();
  }

  async restoreSession(): Promise<boolean> {
    return false;
  }

  signOut(): void {}

  pause(): Promise<CommandReply> {
    return unsupported();
  }

  resume(): Promise<CommandReply> {
    return unsupported();
  }

  invite(): Promise<InviteReply> {
    return unsupported();
  }

  invites(): Promise<InviteView[]> {
    return unsupported();
  }

  revokeInvite(): Promise<RevokeInviteReply> {
    return unsupported();
  }

  stopJob(): Promise<StopJobReply> {
    return unsupported();
  }
}
