// Picks the backend for where the app runs. Only the browser one exists today; the desktop
// app will add its Tauri IPC backend here.

import type { Backend } from "./index";
import { HttpBackend } from "./http";

export function chooseBackend(): Backend {
  return new HttpBackend();
}
