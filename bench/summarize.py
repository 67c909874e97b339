"""Gathers one day's benchmark results into bench/results/<date>.json (every figure next to its
goal), bench/results/<date>.md (the summary) and plots in bench/results/<date>/*.png.

Usage: summarize.py RESULTS_DIR DATE   (run by bench/report; needs matplotlib)
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(results, name, date):
    path = os.path.join(results, f"{name}-{date}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def get(doc, *keys):
    for k in keys:
        if doc is None:
            return None
        if isinstance(k, int):
            doc = doc[k] if isinstance(doc, list) and len(doc) > k else None
        else:
            doc = doc.get(k) if isinstance(doc, dict) else None
    return doc


def figures(docs):
    """(benchmark, figure, measured, goal text, met) rows; measured None when not run."""
    rows = []
    pol, fleet, cp, sens = docs["politeness"], docs["fleet"], docs["control-plane"], docs["sensing"]

    def row(bench, what, value, unit, goal, met):
        rows.append(
            {
                "benchmark": bench,
                "figure": what,
                "measured": value,
                "unit": unit,
                "goal": goal,
                "met": met if value is not None else None,
            }
        )

    for variant in ("single_thread", "all_threads"):
        r = get(pol, "interference", "ratios_vs_idle", variant)
        for who, label in (("flotilla_owner_active", "Flotilla, owner active"), ("plain_ray", "plain Ray")):
            v = get(r, who)
            goal = "<= 1.05x" if who.startswith("flotilla") else "(reference)"
            met = (v <= 1.05) if (v is not None and who.startswith("flotilla")) else None
            row("politeness", f"owner's job vs idle, {variant.replace('_', ' ')}, {label}", v, "x", goal, met)
    relief = get(pol, "reaction", "quota_set_p95_ms")
    row("politeness", "relief on a key press (the node's cap written), p95", relief, "ms", "<= 100 ms", relief is not None and relief <= 100)
    p95 = get(pol, "reaction", "p95_ms")
    row("politeness", "key press to the node's CPU under its cap (100 ms window), p95", p95, "ms", "<= 100 ms", p95 is not None and p95 <= 100)
    for who, label in (("flotilla_owner_active", "Flotilla, owner active"), ("plain_ray", "plain Ray")):
        flot = who.startswith("flotilla")
        v = get(pol, "owner_latency", who, "ratio")
        row("politeness", f"owner's wake-up latency p99 (cyclictest) vs idle, {label}", v, "x", "<= 1.2x" if flot else "(reference)", (v <= 1.2) if (v is not None and flot) else None)
        v = get(pol, "owner_build", who, "ratio")
        row("politeness", f"owner's build (make -j) vs idle, {label}", v, "x", "<= 1.03x" if flot else "(reference)", (v <= 1.03) if (v is not None and flot) else None)
    h = get(pol, "harvest", "ratio_plain_over_flotilla")
    row("politeness", "harvest, Flotilla / plain Ray throughput", h, "", ">= 0.95", h is not None and h >= 0.95)
    for run in get(cp, "runs") or []:
        n = run.get("agents")
        cores = run.get("head_cpu_cores")
        p99 = get(run, "report_to_snapshot_ms", "p99")
        api = get(run, "snapshot_api_ms", "p99")
        row("control plane", f"head CPU, {n} agents", cores, "cores", "<= 1 core at 5,000", cores is not None and cores <= 1.0)
        row("control plane", f"report to snapshot p99, {n} agents", p99, "ms", "<= 1000 ms", p99 is not None and p99 <= 1000)
        row("control plane", f"cluster API p99, {n} agents", api, "ms", "<= 50 ms", api is not None and api <= 50)
    # The agent reads the running programs every 5 s, as the benchmark recommends.
    sense = get(sens, "live_cpu_percent_apps_every_5s")
    row("sensing", "sensing every 250 ms, CPU of one core", sense, "%", "<= 1 %", sense is not None and sense <= 1.0)
    j = get(fleet, "time_to_join", "first_task_p50_s")
    jg = get(fleet, "time_to_join", "goal_s") or 15
    steps = get(fleet, "time_to_join", "steps_median_s")
    split = ""
    if steps:
        split = (f" (joined, runtime checked {fmt(steps.get('enrolled_and_runtime_checked'))} s; `ray start` to its raylet "
                 f"{fmt(steps.get('ray_start_until_its_raylet_runs'))} s; to ALIVE {fmt(steps.get('raylet_until_alive_in_ray'))} s; "
                 f"to the first task {fmt(steps.get('alive_until_first_task'))} s)")
    row("fleet", f"time to join, to the first task (median){split}", j, "s", f"<= {fmt(float(jg))} s", j is not None and j <= jg)
    rss = get(fleet, "agent_overhead", "agent", "rss_mb_max")
    cpu = get(fleet, "agent_overhead", "agent", "cpu_percent")
    row("fleet", "idle agent RSS (max)", rss, "MB", "<= 30 MB", rss is not None and rss <= 30)
    row("fleet", "idle agent CPU", cpu, "% of a core", "<= 0.2 %", cpu is not None and cpu <= 0.2)

    d = docs["desktop"]
    mem = get(d, "app_pss_mb_max")
    row("desktop", "the app in the tray, window closed, all its processes (PSS, max)", mem, "MB", "<= 150 MB", mem is not None and mem <= 150)
    kb = get(d, "bundle_kb_gzipped")
    row("desktop", "dashboard download (JS + CSS, gzipped)", kb, "KB", "<= 300 KB", kb is not None and kb <= 300)

    soak = docs["soak"]
    for who, f in sorted((get(soak, "processes") or {}).items()):
        label = "the head's flotilla" if who == "head" else f"agent {who}"
        g = f.get("growth")
        pct = None if g is None else round(g * 100, 1)
        row("soak", f"{label}: RSS growth over {fmt((get(soak, 'seconds') or 0) / 60)} min of sweeps with faults ({fmt((f.get('first_after_warmup_kib') or 0) / 1024)} -> {fmt((f.get('late_median_kib') or 0) / 1024)} MB)", pct, "%", "< 10 %", pct is not None and pct < 10)

    sl = docs["sleep"]
    fl = get(sl, "flotilla", "median_resumed_elsewhere_s")
    row("sleep", "a laptop announces sleep mid-sweep: its tasks running on another node, Flotilla (median)", fl, "s", "<= 5 s", fl is not None and fl <= 5)
    lock = get(sl, "flotilla", "median_lock_released_s")
    row("sleep", "Flotilla: the OS may sleep (inhibitor lock let go), after the announcement (median)", lock, "s", "(reported)", None)
    back = get(sl, "flotilla", "median_back_alive_s")
    row("sleep", "Flotilla: the node ALIVE again after wake (median)", back, "s", "(reported)", None)
    pl = get(sl, "plain_ray", "median_resumed_elsewhere_s")
    row("sleep", "the same laptop under plain Ray, no warning: its tasks running on another node (median)", pl, "s", "(reference)", None)

    mem = docs["memory"]
    for who, label in (("flotilla", "Flotilla"), ("plain_ray", "plain Ray")):
        judged = who == "flotilla"
        r = get(mem, who, "owner_ratio_vs_idle")
        row("memory", f"the owner takes most of the free memory while Ray tasks hold memory: its time vs idle, {label}", r, "x", "<= 1.1x" if judged else "(reference)", (r is not None and r <= 1.1) if judged else None)
        k = get(mem, who, "owner_processes_killed")
        row("memory", f"owner processes killed, {label}", k, "", "0" if judged else "(reference)", (k == 0) if judged else None)
        lost = get(mem, who, "tasks_lost")
        row("memory", f"Ray tasks lost (retried if their worker was ended), {label}", lost, "", "0" if judged else "(reference)", (lost == 0) if judged else None)

    sc = docs["scaling"]
    goal_paths = get(sc, "goal_paths")
    for w in scaling_workloads(sc):
        paths = w.get("paths") or 0
        kind = f"sweep, each evaluation also on {paths} resamples" if paths else "sweep"
        judged = paths == goal_paths
        for r in w.get("nodes") or []:
            n, eff = r.get("nodes"), r.get("efficiency")
            if n == 1:
                goal, met = "(reference)", None
            elif n == 3 and w.get("goal_efficiency_3") is not None:
                g = w["goal_efficiency_3"]
                goal, met = f">= {g}", eff is not None and eff >= g
            elif n == 3 and judged:
                goal, met = ">= 0.9", eff is not None and eff >= 0.9
            else:
                goal, met = "(reported)", None
            busy = r.get("nodes_busy")
            busy_text = f", nodes busy {fmt(busy * 100)}%" if busy is not None else ""
            per_eval = r.get("seconds_per_evaluation")
            eval_text = f", {fmt(per_eval)} s per evaluation" if per_eval is not None else ""
            row("scaling", f"{kind} on {n} node(s): efficiency (speedup {fmt(r.get('speedup'))}, median {fmt(r.get('median_s'))} s, first evaluations after {fmt(r.get('startup_s'))} s{eval_text}{busy_text})", eff, "", goal, met)
    return rows


def scaling_workloads(sc):
    """The scaling benchmark's workloads (older reports had one, as `nodes`)."""
    if get(sc, "workloads"):
        return get(sc, "workloads")
    return [{"paths": 0, "nodes": get(sc, "nodes") or []}] if sc else []


def plot_politeness(pol, out):
    paths = []
    if pol is None:
        return paths
    fig, ax = plt.subplots(figsize=(6, 3.5))
    variants = ["single_thread", "all_threads"]
    for i, who in enumerate(["plain_ray", "flotilla_owner_active"]):
        vals = [get(pol, "interference", "ratios_vs_idle", v, who) or 0 for v in variants]
        ax.bar([x + i * 0.38 for x in range(2)], vals, width=0.36, label=who.replace("_", " "))
    ax.axhline(1.05, color="red", linestyle="--", linewidth=1, label="goal (Flotilla)")
    ax.set_xticks([x + 0.19 for x in range(2)], ["single thread", "all threads"])
    ax.set_ylim(0.9, max(1.3, ax.get_ylim()[1]))
    ax.set_ylabel("owner's job time / idle")
    ax.set_title("Owner interference (node saturated)")
    ax.legend(fontsize=8)
    paths.append(save(fig, out, "interference.png"))

    to_cap = sorted(get(pol, "reaction", "to_cap_ms") or [])
    if to_cap:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(to_cap, [(i + 1) / len(to_cap) for i in range(len(to_cap))], marker="o", markersize=3)
        ax.axvline(100, color="red", linestyle="--", linewidth=1, label="goal: p95 <= 100 ms")
        ax.set_xlabel("owner's key press -> node at its cap (ms)")
        ax.set_ylabel("fraction of trials")
        ax.set_title("Reaction")
        ax.legend(fontsize=8)
        paths.append(save(fig, out, "reaction.png"))

    runs = {
        "plain Ray": [r.get("wall_s") for r in get(pol, "harvest", "plain_ray_runs") or []],
        "Flotilla": [r.get("wall_s") for r in get(pol, "harvest", "flotilla_runs") or []],
    }
    if any(runs.values()):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for i, (name, walls) in enumerate(runs.items()):
            walls = [w for w in walls if w is not None]
            ax.scatter([i] * len(walls), walls, s=18)
            if walls:
                ax.hlines(sorted(walls)[len(walls) // 2], i - 0.2, i + 0.2, color="black")
        ax.set_xticks(range(2), list(runs))
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylabel("sweep wall seconds (lower is better)")
        ax.set_title("Harvest: the sweep, owner away")
        paths.append(save(fig, out, "harvest.png"))
    return paths


def plot_control_plane(cp, out):
    runs = get(cp, "runs") or []
    if not runs:
        return []
    agents = [r["agents"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(agents, [get(r, "report_to_snapshot_ms", "p99") for r in runs], marker="o", label="report -> snapshot p99 (ms)")
    ax.plot(agents, [get(r, "snapshot_api_ms", "p99") for r in runs], marker="o", label="cluster API p99 (ms)")
    ax.set_xlabel("agents reporting every second")
    ax.set_ylabel("ms")
    ax.set_title("Control plane")
    ax.legend(fontsize=8)
    return [save(fig, out, "control-plane.png")]


def plot_fleet(fleet, out):
    runs = get(fleet, "time_to_join", "runs") or []
    if not runs:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(1, len(runs) + 1)
    ax.bar([x - 0.2 for x in xs], [r["alive_s"] for r in runs], width=0.4, label="node ALIVE")
    ax.bar([x + 0.2 for x in xs], [r["first_task_s"] for r in runs], width=0.4, label="first task")
    ax.axhline(15, color="red", linestyle="--", linewidth=1, label="goal: 15 s")
    ax.set_xlabel("join")
    ax.set_ylabel("seconds after `flotilla join`")
    ax.set_title("Time to join (warm runtime cache)")
    ax.legend(fontsize=8)
    return [save(fig, out, "time-to-join.png")]


def plot_scaling(sc, out):
    workloads = [w for w in scaling_workloads(sc) if w.get("nodes")]
    if not workloads:
        return []
    ns = [r["nodes"] for r in workloads[0]["nodes"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for w in workloads:
        rows = w["nodes"]
        label = f"{w['paths']} resamples per evaluation" if w.get("paths") else "the sweep"
        ax.plot([r["nodes"] for r in rows], [r["speedup"] for r in rows], marker="o", label=label)
    ax.plot(ns, ns, linestyle="--", color="grey", label="ideal")
    ax.plot(ns, [0.9 * n for n in ns], linestyle=":", color="red", label="goal: efficiency 0.9")
    ax.set_xticks(ns)
    ax.set_xlabel("worker nodes (1 CPU each)")
    ax.set_ylabel("speedup over one node")
    ax.set_title(f"Sweep scaling ({get(sc, 'evals')} evaluations x {get(sc, 'candles')} candles)")
    ax.legend(fontsize=8)
    return [save(fig, out, "scaling.png")]


def plot_soak(soak, out):
    procs = get(soak, "processes") or {}
    if not procs:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for who, f in sorted(procs.items()):
        samples = f.get("samples") or []
        label = "head (flotilla up)" if who == "head" else f"agent {who}"
        # One sample every 10 s.
        ax.plot([i * 10 / 60 for i in range(len(samples))], [kib / 1024 for kib in samples], label=label)
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title("Soak: sweeps with faults")
    ax.legend(fontsize=8)
    return [save(fig, out, "soak.png")]


def save(fig, out, name):
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fmt(v):
    if v is None:
        return "not measured"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def main():
    results, date = sys.argv[1], sys.argv[2]
    names = ["sensing", "control-plane", "politeness", "fleet", "scaling", "sleep", "memory", "desktop", "soak"]
    docs = {n: load(results, n, date) for n in names}
    rows = figures(docs)
    out = os.path.join(results, date)
    plots = plot_politeness(docs["politeness"], out) + plot_control_plane(docs["control-plane"], out) + plot_fleet(docs["fleet"], out) + plot_scaling(docs["scaling"], out) + plot_soak(docs["soak"], out)
    machine = get(docs["politeness"], "machine") or get(docs["fleet"], "machine") or {}
    combined = {
        "date": date,
        "machine": machine,
        "quick": bool(get(docs["politeness"], "quick")),
        "figures": rows,
        "sources": {n: f"{n}-{date}.json" if docs[n] is not None else None for n in names},
    }
    with open(os.path.join(results, f"{date}.json"), "w") as f:
        json.dump(combined, f, indent=2)
        f.write("\n")
    lines = [
        f"# Benchmarks, {date}",
        "",
        f"Machine: {machine.get('cores', '?')} cores, {machine.get('cpu_model') or 'unknown CPU'}, "
        f"{machine.get('memory_mb', '?')} MB; load average at the start {machine.get('load_average_start')}.",
        "Produced by `bench/report`" + (" --quick (a smoke run)" if combined["quick"] else "") + "; raw figures in the JSON files beside this one.",
        "",
        "| benchmark | figure | measured | goal | met |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        unit = f" {r['unit']}" if r["unit"] and r["measured"] is not None else ""
        lines.append(f"| {r['benchmark']} | {r['figure']} | {fmt(r['measured'])}{unit} | {r['goal']} | {met} |")
    lines.append("")
    for p in plots:
        lines.append(f"![{os.path.basename(p)}]({date}/{os.path.basename(p)})")
    lines.append("")
    with open(os.path.join(results, f"{date}.md"), "w") as f:
        f.write("\n".join(lines))
    missed = [r for r in rows if r["met"] is False]
    print(f"wrote {results}/{date}.json, {results}/{date}.md and {len(plots)} plots; "
          f"{len(missed)} figure(s) miss their goal", file=sys.stderr)


if __name__ == "__main__":
    main()
