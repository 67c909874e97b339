// The cluster as the dashboard sees it: the latest snapshot, the latest agents (which arrive
// more often), the link's state, and short histories kept here from the event stream for the
// sparklines and the tasks chart (the head keeps no history for them).

import type { AgentView, Backend, ClusterSnapshot, LinkState } from "./backend";
import { mergeRows, type Row } from "./rows";

/** Points kept per series: ten minutes at one snapshot every 2 s. */
export const HISTORY = 300;

export interface Point {
  at: number;
  value: number;
}

function push(series: Point[], point: Point): Point[] {
  const next = series.length >= HISTORY ? series.slice(series.length - HISTORY + 1) : series.slice();
  next.push(point);
  return next;
}

export class Cluster {
  snapshot = $state<ClusterSnapshot | null>(null);
  agents = $state<AgentView[]>([]);
  link = $state<LinkState>("connecting");
  /** Running tasks over time. */
  tasks = $state<Point[]>([]);
  /** CPU use (0..1) over time, by row key. */
  usage = $state<Record<string, Point[]>>({});
  /** The wall clock, ticking every second, for "last seen". */
  now = $state(Date.now());

  rows: Row[] = $derived(
    mergeRows(this.agents, this.snapshot?.nodes ?? [], this.snapshot?.python_version ?? ""),
  );

  private stop: (() => void) | null = null;
  private clock: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly backend: Backend) {}

  start(): void {
    this.clock = setInterval(() => (this.now = Date.now()), 1000);
    this.backend
      .snapshot()
      .then((s) => {
        if (!this.snapshot) this.take(s);
      })
      .catch(() => {
        // The event stream reports the link; it carries snapshots too.
      });
    this.stop = this.backend.watch({
      agents: (a) => (this.agents = a),
      cluster: (s) => this.take(s),
      link: (l) => (this.link = l),
    });
  }

  dispose(): void {
    this.stop?.();
    clearInterval(this.clock);
  }

  private take(s: ClusterSnapshot): void {
    // The first request and the event stream race: an older snapshot never replaces a newer
    // one, so the histories only move forward in time.
    if (this.snapshot && s.generated_at_ms <= this.snapshot.generated_at_ms) return;
    this.snapshot = s;
    this.agents = s.agents;
    const at = s.generated_at_ms || Date.now();
    this.tasks = push(this.tasks, { at, value: s.tasks.running });
    const usage: Record<string, Point[]> = {};
    for (const row of mergeRows(s.agents, s.nodes)) {
      usage[row.key] = push(this.usage[row.key] ?? [], { at, value: row.utilisation ?? 0 });
    }
    this.usage = usage;
  }
}
