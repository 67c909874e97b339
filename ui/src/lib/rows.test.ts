import { describe, expect, it } from "vitest";
import type { AgentView } from "./generated/AgentView";
import type { NodeView } from "./generated/NodeView";
import { mergeRows, nodeCounts } from "./rows";

const node = (over: Partial<NodeView>): NodeView => ({
  node_id: "n",
  name: "n",
  ip: "10.0.0.1",
  state: "ALIVE",
  state_message: null,
  is_head: false,
  flotilla: true,
  cpus_total: 2,
  cpus_used: 1,
  draining: false,
  started_at_ms: 1,
  ...over,
});

const agent = (over: Partial<AgentView>): AgentView => ({
  node_id: 1,
  name: "w1",
  hostname: "box",
  os: "linux",
  arch: "x86_64",
  cpus: 4,
  state: "contributing",
  reason_code: "contributing",
  reason_en: "Contributing all 4 CPUs",
  reason_es: "Aportando las 4 CPU",
  connected: true,
  cpus_advertised: 4,
  cpus_capped: 4,
  owner_active: false,
  on_battery: false,
  battery_percent: null,
  ray_node_id: "r1",
  last_seen_unix_ms: 5,
  python_version: "3.11.7",
  ...over,
});

describe("mergeRows", () => {
  it("joins agents to their Ray nodes and keeps the head's coordinator as its own row", () => {
    const rows = mergeRows(
      [agent({})],
      [node({ node_id: "h", name: "head", is_head: true, cpus_total: 0, cpus_used: 0 }), node({ node_id: "r1", name: "w1" })],
    );
    expect(rows.map((r) => [r.name, r.state, r.reason])).toEqual([
      ["head", "coordinator", "head"],
      ["w1", "contributing", "contributing"],
    ]);
    expect(rows[1].utilisation).toBe(0.5);
    expect(rows[1].agentId).toBe(1);
    expect(rows[0].agentId).toBeNull();
  });

  it("keeps a paused agent whose Ray node is gone as one row", () => {
    const rows = mergeRows(
      [agent({ state: "paused", reason_code: "paused_indefinitely", ray_node_id: "r1" })],
      [node({ node_id: "old", name: "w1", state: "DEAD" })],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0].state).toBe("paused");
    expect(rows[0].utilisation).toBeNull();
  });

  it("marks a disconnected agent with the disconnected reason", () => {
    const rows = mergeRows([agent({ connected: false, state: "offline", reason_code: "" })], []);
    expect(rows[0].reason).toBe("disconnected");
    expect(rows[0].cpusAdvertised).toBeNull();
  });

  it("gives each agent its Python, marked against the cluster's, and the head the cluster's", () => {
    const rows = mergeRows(
      [
        agent({ node_id: 1, name: "same", python_version: "3.11.7" }),
        agent({ node_id: 2, name: "patch", ray_node_id: "", python_version: "3.11.2" }),
        agent({ node_id: 3, name: "unknown", ray_node_id: "", python_version: "" }),
      ],
      [node({ node_id: "h", name: "head", is_head: true }), node({ node_id: "x", name: "plain" })],
      "3.11.7",
    );
    const python = Object.fromEntries(rows.map((r) => [r.name, r.python]));
    expect(python).toEqual({
      head: { version: "3.11.7", cluster: "3.11.7", diff: null },
      same: { version: "3.11.7", cluster: "3.11.7", diff: null },
      patch: { version: "3.11.2", cluster: "3.11.7", diff: "patch" },
      unknown: null,
      plain: null,
    });
  });
});

describe("nodeCounts", () => {
  it("counts offline, failed and gone rows as down, whatever Ray's own totals say", () => {
    // Three machines away (no Ray node left, so Ray counts none of them dead), one failed, one
    // paused, one contributing, the head's coordinator and a Ray node gone.
    const rows = mergeRows(
      [
        agent({ node_id: 1, name: "a", state: "offline", connected: false, ray_node_id: undefined }),
        agent({ node_id: 2, name: "b", state: "offline", connected: false, ray_node_id: undefined }),
        agent({ node_id: 3, name: "c", state: "offline", connected: false, ray_node_id: undefined }),
        agent({ node_id: 4, name: "d", state: "error", ray_node_id: undefined }),
        agent({ node_id: 5, name: "e", state: "paused", ray_node_id: undefined }),
        agent({ node_id: 6, name: "f", ray_node_id: "r6" }),
      ],
      [
        node({ node_id: "h", name: "head", is_head: true }),
        node({ node_id: "r6", name: "f" }),
        node({ node_id: "x", name: "old", state: "DEAD" }),
      ],
    );
    expect(rows.length).toBe(8);
    expect(nodeCounts(rows)).toEqual({ up: 3, down: 5 });
    expect(nodeCounts([])).toEqual({ up: 0, down: 0 });
  });
});
