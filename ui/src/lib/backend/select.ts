// Picks the backend for where the app runs: Tauri IPC inside the desktop app, else the head's
// HTTP API.

import type { Backend } from "./index";
import { HttpBackend } from "./http";
import { TauriBackend } from "./tauri";

export function chooseBackend(): Backend {
  return "__TAURI_INTERNALS__" in globalThis ? new TauriBackend() : new HttpBackend();
}
