// The backend of the dashboard served by the head: its HTTP API and event stream.

import type { ApiError } from "../generated/ApiError";
import type { Whoami } from "../generated/Whoami";
import {
  BackendError,
  type AgentView,
  type Backend,
  type ClusterSnapshot,
  type CommandReply,
  type InviteReply,
  type InviteRequest,
  type InviteView,
  type NodeEvent,
  type PauseRequest,
  type RevokeInviteReply,
  type StopJobReply,
  type WatchHandlers,
} from "./index";

/** Where the admin token lives: this tab's session only, never localStorage. */
const TOKEN_KEY = "flotilla.admin-token";

export class HttpBackend implements Backend {
  private token: string | null = null;

  constructor(private readonly base = "") {}

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res: Response;
    try {
      res = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (e) {
      throw new BackendError("unreachable", e instanceof Error ? e.message : String(e));
    }
    const text = await res.text();
    let json: unknown = undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      // Not JSON: reported below with the status.
    }
    if (!res.ok) {
      const err = (json as ApiError | undefined)?.error;
      throw new BackendError(err?.code ?? `http_${res.status}`, err?.message ?? `HTTP ${res.status}`);
    }
    return json as T;
  }

  snapshot(): Promise<ClusterSnapshot> {
    return this.request("GET", "/api/v1/cluster");
  }

  watch(h: WatchHandlers): () => void {
    let source: EventSource | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    let failures = 0;
    const open = () => {
      source = new EventSource(this.base + "/api/v1/events");
      source.onopen = () => {
        failures = 0;
        h.link("open");
      };
      source.addEventListener("agents", (e) => h.agents(JSON.parse((e as MessageEvent).data) as AgentView[]));
      source.addEventListener("cluster", (e) => h.cluster(JSON.parse((e as MessageEvent).data) as ClusterSnapshot));
      source.addEventListener("node", (e) => h.node?.(JSON.parse((e as MessageEvent).data) as NodeEvent));
      source.onerror = () => {
        h.link("lost");
        // The browser retries by itself while the stream is CONNECTING; a CLOSED stream (the
        // head answered with an error) is reopened here, backing off to 10 s.
        if (source?.readyState === EventSource.CLOSED && !stopped) {
          source.close();
          failures += 1;
          timer = setTimeout(open, Math.min(10_000, 500 * 2 ** failures));
        }
      };
    };
    h.link("connecting");
    open();
    return () => {
      stopped = true;
      clearTimeout(timer);
      source?.close();
    };
  }

  isAdmin(): boolean {
    return this.token !== null;
  }

  async signIn(token: string): Promise<void> {
    const candidate = token.trim();
    if (!candidate) throw new BackendError("unauthorized", "empty token");
    const previous = this.token;
    this.token = candidate;
    try {
      const who = await this.request<Whoami>("GET", "/api/v1/whoami");
      if (!who.admin) throw new BackendError("unauthorized", "not an admin token");
    } catch (e) {
      this.token = previous;
      throw e;
    }
    sessionStorage.setItem(TOKEN_KEY, candidate);
  }

  async restoreSession(): Promise<boolean> {
    const kept = sessionStorage.getItem(TOKEN_KEY);
    if (!kept) return false;
    try {
      await this.signIn(kept);
      return true;
    } catch (e) {
      // A token the head no longer accepts is dropped; one we could not check is kept.
      if (e instanceof BackendError && e.code === "unauthorized") this.signOut();
      return false;
    }
  }

  signOut(): void {
    this.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
  }

  pause(node: string, request: PauseRequest): Promise<CommandReply> {
    return this.request("POST", `/api/v1/nodes/${encodeURIComponent(node)}/pause`, request);
  }

  resume(node: string): Promise<CommandReply> {
    return this.request("POST", `/api/v1/nodes/${encodeURIComponent(node)}/resume`, {});
  }

  invite(request: InviteRequest): Promise<InviteReply> {
    return this.request("POST", "/api/v1/invites", request);
  }

  invites(): Promise<InviteView[]> {
    return this.request("GET", "/api/v1/invites");
  }

  revokeInvite(id: string): Promise<RevokeInviteReply> {
    return this.request("POST", `/api/v1/invites/${encodeURIComponent(id)}/revoke`, {});
  }

  stopJob(id: string): Promise<StopJobReply> {
    return this.request("POST", `/api/v1/jobs/${encodeURIComponent(id)}/stop`, {});
  }
}
