// The desktop app's backend: Tauri IPC to the app's own process, which runs this computer's
// worker and reads the cluster from the control plane with the node's credential. Admin
// actions belong to the head's dashboard; here they answer `unsupported`.

import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type { CommandError } from "../generated/desktop/CommandError";
import {
  BackendError,
  type Backend,
  type ClusterSnapshot,
  type CommandReply,
  type DesktopApi,
  type DesktopStatus,
  type InviteReply,
  type LocalPause,
  type SettingsView,
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
      throw new BackendError(err.code, err.message ?? err.code);
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
    let unlisten: (() => void) | null = null;
    this.status().then((s) => !stopped && onStatus(s), () => {});
    listen<DesktopStatus>("flotilla://status", (e) => onStatus(e.payload)).then((u) => {
      if (stopped) u();
      else unlisten = u;
    });
    return () => {
      stopped = true;
      unlisten?.();
    };
  }

  join(code: string, name?: string): Promise<DesktopStatus> {
    return call("join", { code, name: name || null });
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
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      // A hidden window (closed to the tray) asks nothing: the app stays quiet in the tray.
      if (document.hidden) {
        timer = setTimeout(tick, POLL_MS);
        return;
      }
      try {
        const s = await this.snapshot();
        if (stopped) return;
        h.link("open");
        h.agents(s.agents);
        h.cluster(s);
      } catch {
        if (!stopped) h.link("lost");
      }
      if (!stopped) timer = setTimeout(tick, POLL_MS);
    };
    h.link("connecting");
    tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
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
}
