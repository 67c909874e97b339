// One row per machine for the nodes table: the control plane's agents (a paused node may have
// no Ray node at all) joined with Ray's own nodes (the head's coordinator, plain workers).

import type { AgentView } from "./generated/AgentView";
import type { NodeView } from "./generated/NodeView";
import { pythonDiff, type PythonDiff } from "./python";

export interface Row {
  /** Stable across updates: `agent:<id>` or `ray:<name>`. */
  key: string;
  name: string;
  isHead: boolean;
  os: string | null;
  /** A key under `state.` in the catalogues. */
  state: string;
  /** A key under `reason.` in the catalogues, or the agent's own code. */
  reason: string;
  /** The agent's own wording, used for a code the catalogues do not know. */
  reasonText: { en: string; es: string } | null;
  cpusAdvertised: number | null;
  cpusTotal: number | null;
  /** Share of the node's Ray CPUs in use, 0..1, or null when it has no live Ray node. */
  utilisation: number | null;
  battery: { percent: number | null; onBattery: boolean } | null;
  ownerActive: boolean | null;
  lastSeenMs: number | null;
  /** The control plane's id, for admin commands; null for a node without an agent. */
  agentId: number | null;
  connected: boolean;
  /** The Python the node runs, and how it differs from the cluster's; null while not known. */
  python: { version: string; cluster: string; diff: PythonDiff } | null;
}

function utilisation(n: NodeView | undefined): number | null {
  if (!n || n.state !== "ALIVE") return null;
  return n.cpus_total > 0 ? Math.min(1, n.cpus_used / n.cpus_total) : 0;
}

/** The rows; `clusterPython` is the cluster's Python (`ClusterSnapshot.python_version`), which
 * each agent's is compared with and which the head's coordinator runs. */
export function mergeRows(agents: AgentView[], nodes: NodeView[], clusterPython = ""): Row[] {
  const python = (version: string) =>
    version ? { version, cluster: clusterPython, diff: pythonDiff(version, clusterPython) } : null;
  const unused = new Set(nodes);
  const take = (pred: (n: NodeView) => boolean) => {
    const found = [...unused].find(pred);
    if (found) unused.delete(found);
    return found;
  };
  const rows: Row[] = agents.map((a) => {
    const ray =
      (a.ray_node_id ? take((n) => n.node_id === a.ray_node_id) : undefined) ??
      take((n) => n.name === a.name && n.state === "ALIVE") ??
      take((n) => n.name === a.name);
    return {
      key: `agent:${a.node_id}`,
      name: a.name,
      isHead: false,
      os: a.os || null,
      state: a.state,
      reason: a.reason_code || (a.connected ? "" : "disconnected"),
      reasonText: a.reason_en || a.reason_es ? { en: a.reason_en, es: a.reason_es } : null,
      cpusAdvertised: a.connected ? a.cpus_advertised : null,
      cpusTotal: a.cpus,
      utilisation: utilisation(ray),
      battery:
        a.battery_percent !== null || a.on_battery
          ? { percent: a.battery_percent, onBattery: a.on_battery }
          : null,
      ownerActive: a.owner_active,
      lastSeenMs: a.last_seen_unix_ms > 0 ? a.last_seen_unix_ms : null,
      agentId: a.node_id,
      connected: a.connected,
      python: python(a.python_version),
    };
  });
  for (const n of unused) {
    const alive = n.state === "ALIVE";
    rows.push({
      key: `ray:${n.name || n.node_id}`,
      name: n.name || n.node_id.slice(0, 12),
      isHead: n.is_head,
      os: null,
      state: !alive ? "gone" : n.is_head ? "coordinator" : "running",
      reason: !alive ? "ray_dead" : n.is_head ? "head" : "ray_only",
      reasonText: null,
      cpusAdvertised: alive ? n.cpus_total : null,
      cpusTotal: null,
      utilisation: utilisation(n),
      battery: null,
      ownerActive: null,
      lastSeenMs: null,
      agentId: null,
      connected: alive,
      // The head's coordinator runs the cluster's Python; a plain Ray node does not say.
      python: n.is_head ? python(clusterPython) : null,
    });
  }
  // The head first, then by name.
  return rows.sort((a, b) => Number(b.isHead) - Number(a.isHead) || a.name.localeCompare(b.name));
}

/** Row states counted as down on the nodes card: the machine is away, failed, gone from Ray or
 * no longer a member. */
const DOWN = new Set(["offline", "error", "gone", "revoked"]);

/** The nodes card's figures, from the same rows the table shows: a row is down when it has no
 * session with the head or its state says so, up otherwise (a paused node is up). */
export function nodeCounts(rows: Row[]): { up: number; down: number } {
  const down = rows.filter((r) => !r.connected || DOWN.has(r.state)).length;
  return { up: rows.length - down, down };
}
