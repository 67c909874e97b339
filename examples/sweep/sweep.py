#!/usr/bin/env python3
"""Parameter sweep of a BTC-USD trading strategy, one Ray task per evaluation.

The sweep backtests a long-only moving-average crossover with a stop-loss over
seeded synthetic hourly candles, for a grid of (fast, slow, stop-loss)
parameters. Each grid point is an independent Ray task, so the sweep spreads
across every machine in the cluster; `--local` runs the same function
in-process for comparison. Results are bit-for-bit identical in both modes.

    python sweep.py                       # on the cluster (RAY_ADDRESS or "auto")
    python sweep.py --local               # in-process, Ray not needed
    python sweep.py --evals 400 --json results.json
    python sweep.py --paths 20            # and how each result holds up on 20
                                          # bootstrap resamples of the market
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections import Counter

import numpy as np

HOURS_PER_YEAR = 24 * 365
ANNUALISATION = math.sqrt(HOURS_PER_YEAR)

# Synthetic market: roughly BTC-like, about 65 % annualised volatility and a
# modest positive drift, starting near 20,000 USD.
START_PRICE = 20_000.0
ANNUAL_DRIFT = 0.30
ANNUAL_VOLATILITY = 0.65

# Taker-style fee charged on entry and on exit, as a fraction of the notional.
FEE = 0.0005

# Robustness checks resample the market in blocks of a week of hourly moves, which keeps the
# volatility clustering within a block.
BLOCK_HOURS = 168
MAX_PATHS = 1000

# The default 80-point grid (5 x 4 x 4); windows are in hours.
BASE_FAST = (6, 12, 24, 48, 72)
BASE_SLOW = (96, 168, 336, 720)
BASE_STOP = (0.02, 0.05, 0.10, 0.20)
# Extra values that extend the grid when more than 80 evaluations are asked for.
EXTRA_FAST = (3, 9, 18, 36, 60)
EXTRA_SLOW = (120, 240, 480, 1080, 1440, 2160)
EXTRA_STOP = (0.01, 0.03, 0.075, 0.15, 0.30)

EXIT_TASK_FAILED = 1
EXIT_NO_CLUSTER = 3


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def generate_candles(n: int, seed: int) -> dict[str, np.ndarray]:
    """Hourly OHLCV candles from geometric Brownian motion.

    The same (n, seed) always gives the same bytes: a single PCG64 stream is
    consumed in a fixed order. The driver builds the candles once and ships
    them to the workers, so every evaluation sees exactly the same data
    whatever machine it runs on.
    """
    if n < 2:
        raise ValueError("need at least 2 candles")
    rng = np.random.default_rng(seed)
    dt = 1.0 / HOURS_PER_YEAR
    sigma = ANNUAL_VOLATILITY * math.sqrt(dt)
    mu = (ANNUAL_DRIFT - 0.5 * ANNUAL_VOLATILITY**2) * dt

    log_returns = mu + sigma * rng.standard_normal(n)
    close = START_PRICE * np.exp(np.cumsum(log_returns))
    open_ = np.empty(n)
    open_[0] = START_PRICE
    open_[1:] = close[:-1]

    # Wicks: half-normal excursions beyond the body, about half an hourly
    # sigma; capped so the low can never reach zero.
    up = np.minimum(np.abs(rng.standard_normal(n)) * 0.5 * sigma, 0.5)
    down = np.minimum(np.abs(rng.standard_normal(n)) * 0.5 * sigma, 0.5)
    high = np.maximum(open_, close) * (1.0 + up)
    low = np.minimum(open_, close) * (1.0 - down)

    # Volume (in BTC) is noisy and busier on big moves.
    volume = 1_000.0 * rng.lognormal(0.0, 0.4, n) * (1.0 + np.abs(log_returns) / sigma)

    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


# --------------------------------------------------------------------------
# Parameter grid
# --------------------------------------------------------------------------

def full_grid() -> list[dict]:
    """Every grid point, the default 80 first, each part in nested order."""
    base = list(itertools.product(BASE_FAST, BASE_SLOW, BASE_STOP))
    seen = set(base)
    rest = [
        p
        for p in itertools.product(
            sorted(BASE_FAST + EXTRA_FAST),
            sorted(BASE_SLOW + EXTRA_SLOW),
            sorted(BASE_STOP + EXTRA_STOP),
        )
        if p not in seen and p[0] < p[1]
    ]
    return [{"fast": f, "slow": s, "stop_loss": sl} for f, s, sl in base + rest]


def build_grid(n: int) -> list[dict]:
    """The first n points of the full grid; index in the list is the id."""
    grid = full_grid()
    if not 1 <= n <= len(grid):
        raise ValueError(f"--evals must be between 1 and {len(grid)}")
    return grid[:n]


# --------------------------------------------------------------------------
# Backtest
# --------------------------------------------------------------------------

def _sma(cumsum: np.ndarray, window: int) -> np.ndarray:
    """Simple moving average ending at bars window-1 .. n-1."""
    sums = cumsum[window - 1:].copy()
    sums[1:] -= cumsum[:-window]
    return sums / window


def _interval_mask(n: int, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Boolean mask covering the disjoint inclusive ranges [first, last]."""
    marks = np.zeros(n + 1, dtype=np.int32)
    # Ranges are separated by at least one bar, so no index appears twice
    # and plain fancy assignment is enough.
    marks[first] = 1
    marks[last + 1] = -1
    return np.cumsum(marks[:n]) > 0


def evaluate(candles: dict[str, np.ndarray], fast: int, slow: int,
             stop_loss: float | None) -> dict:
    """Backtest one parameter set; returns metrics only (no id, no params).

    Rules: go long at the close of the bar where the fast SMA crosses above
    the slow SMA; leave at the close of the bar where it falls back below.
    While long, if a bar's low touches entry * (1 - stop_loss) the position
    is closed at that level (or at the open, if the bar gaps through it) and
    stays flat until the next upward crossover. A fee is charged on each
    entry and exit. stop_loss None or 0 disables the stop.

    The stop makes the position path dependent, but only within a single
    crossover episode: each episode has one entry price and therefore one
    fixed stop level, and ends at its first touch. That turns the stop into
    "first hit per episode", which vectorises, so there is no per-bar Python
    loop. Every floating-point step is either element-wise or a strictly
    sequential scan (cumsum/cumprod), and sums use math.fsum, so results do
    not depend on threads, SIMD width or the machine.
    """
    open_, low, close = candles["open"], candles["low"], candles["close"]
    n = close.shape[0]
    if n < 2:
        raise ValueError("need at least 2 candles")
    if not 0 < fast < slow:
        raise ValueError("need 0 < fast < slow")
    if stop_loss is not None and not 0 <= stop_loss < 1:
        raise ValueError("stop_loss must be in [0, 1)")

    # Long signal as of each bar's close; off until the slow SMA exists.
    signal = np.zeros(n, dtype=bool)
    if n >= slow:
        cs = np.cumsum(close)
        signal[slow - 1:] = _sma(cs, fast)[slow - fast:] > _sma(cs, slow)

    # Episodes of consecutive "long" signals. The decision at bar t's close
    # earns the returns of bars t+1 .. (first bar with the signal off).
    edges = np.diff(signal.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    on = np.flatnonzero(edges == 1)
    off = np.flatnonzero(edges == -1)  # may be n: still long when data ends
    tradeable = on < n - 1
    on, off = on[tradeable], off[tradeable]
    first = on + 1
    last = np.minimum(off, n - 1)
    closed = off <= n - 1

    growth = np.ones(n)
    held = np.flatnonzero(_interval_mask(n, first, last))
    growth[held] = close[held] / close[held - 1]

    if stop_loss:
        level = close[on] * (1.0 - stop_loss)
        starts = np.zeros(n, dtype=np.int32)
        starts[first] = 1
        episode = np.cumsum(starts) - 1
        hits = held[low[held] <= level[episode[held]]]
        # hits is ascending, so the first occurrence per episode is its
        # earliest touch.
        stopped, where = np.unique(episode[hits], return_index=True)
        stop_bar = hits[where]
        exit_price = np.minimum(open_[stop_bar], level[stopped])
        # Flat from the bar after the stop to the episode's own end.
        rest = stop_bar < last[stopped]
        growth[_interval_mask(n, stop_bar[rest] + 1, last[stopped][rest])] = 1.0
        growth[stop_bar] = exit_price / close[stop_bar - 1]
        last[stopped] = stop_bar
        closed[stopped] = True

    growth[first] *= 1.0 - FEE
    growth[last[closed]] *= 1.0 - FEE

    equity = np.cumprod(growth)
    peak = np.maximum(np.maximum.accumulate(equity), 1.0)
    max_drawdown = max(0.0, float(np.max(1.0 - equity / peak)))

    # Exact (math.fsum) sums are order independent; hours spent flat add exact
    # zeros, so only the active hours need to be summed one by one.
    active = growth[growth != 1.0] - 1.0
    mean = math.fsum(active.tolist()) / n
    squares = ((active - mean) ** 2).tolist()
    squares.append((n - active.shape[0]) * (mean * mean))
    var = math.fsum(squares) / (n - 1)
    sharpe = mean / math.sqrt(var) * ANNUALISATION if var > 0.0 else 0.0

    return {
        "sharpe": sharpe,
        "total_return": float(equity[-1]) - 1.0,
        "max_drawdown": max_drawdown,
        "trades": int(first.shape[0]),
    }


def resample(candles: dict[str, np.ndarray], block: int,
             rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A moving-block bootstrap of the market: the same hourly moves, drawn in blocks of
    `block` consecutive bars, in another order, from the same first price.

    Every bar keeps its own shape relative to its close (open, high, low), and prices are
    rebuilt by multiplying the moves in order, with operations that round the same way on
    every machine (no exp or log), so a resample is bit-for-bit the same wherever it runs.
    """
    open_, high, low, close = candles["open"], candles["high"], candles["low"], candles["close"]
    n = close.shape[0]
    block = max(1, min(block, n - 1))
    count = -(-(n - 1) // block)
    # Source bars 1..n-1: bar t moved the price by close[t] / close[t-1].
    starts = rng.integers(1, n - block + 1, size=count)
    src = (starts[:, None] + np.arange(block)).ravel()[: n - 1]
    new_close = np.empty(n)
    new_close[0] = close[0]
    new_close[1:] = close[0] * np.cumprod(close[src] / close[src - 1])
    new_open = np.empty(n)
    new_open[0] = open_[0]
    new_open[1:] = new_close[:-1] * (open_[src] / close[src - 1])
    bars = np.concatenate(([0], src))
    return {
        "open": new_open,
        "high": new_close * (high[bars] / close[bars]),
        "low": new_close * (low[bars] / close[bars]),
        "close": new_close,
        "volume": candles["volume"][bars],
    }


def robustness(candles: dict[str, np.ndarray], idx: int, params: dict, paths: int,
               seed: int) -> dict:
    """How one parameter set holds up on `paths` bootstrap resamples of the market: the 5th
    percentile and the median of its Sharpe ratio, and the share of resamples it made money
    on. The resamples depend on the seed and the grid point only, not on where they run."""
    rng = np.random.default_rng([seed, idx])
    sharpes, profitable = [], 0
    for _ in range(paths):
        m = evaluate(resample(candles, BLOCK_HOURS, rng), params["fast"], params["slow"],
                     params["stop_loss"])
        sharpes.append(m["sharpe"])
        profitable += m["total_return"] > 0.0
    ranked = np.sort(np.array(sharpes))
    return {
        "paths": paths,
        "sharpe_p05": float(np.percentile(ranked, 5)),
        "sharpe_median": float(np.median(ranked)),
        "profitable_share": profitable / paths,
    }


def run_one(candles: dict[str, np.ndarray], idx: int, params: dict, paths: int = 0,
            seed: int = 0) -> dict:
    """One grid point, in the result format shared by both modes; with `paths`, also its
    robustness on that many resamples of the market."""
    metrics = evaluate(candles, params["fast"], params["slow"], params["stop_loss"])
    result = {"id": idx, "params": dict(params), **metrics}
    if paths:
        result["robustness"] = robustness(candles, idx, params, paths, seed)
    return result


def _run_one_on_ray(candles, idx, params, paths, seed):
    # Runs on a worker, where Ray is always importable; the node id and the time
    # the evaluation took let the driver show how the sweep was spread across
    # machines and when each began.
    import ray

    start = time.perf_counter()
    result = run_one(candles, idx, params, paths, seed)
    took = time.perf_counter() - start
    return result, ray.get_runtime_context().get_node_id(), took


# --------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------

class SweepError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _progress(done: int, total: int, result: dict, quiet: bool) -> None:
    if not quiet:
        width = max(3, len(str(total)))
        print(f"[{done:>{width}}/{total}] id={result['id']} sharpe={result['sharpe']:.2f}",
              file=sys.stderr, flush=True)


def run_local(candles, grid, quiet=False, paths=0, seed=0):
    """Evaluate every grid point in this process, in grid order.

    Returns (results, nodes, timing, wall seconds).
    """
    start = time.perf_counter()
    results = []
    for idx, params in enumerate(grid):
        results.append(run_one(candles, idx, params, paths, seed))
        _progress(len(results), len(grid), results[-1], quiet)
    wall = time.perf_counter() - start
    return results, {"local": len(results)}, {"local": {"first_s": 0.0, "busy_s": wall}}, wall


def _connect(address: str, quiet: bool):
    try:
        import ray
    except ImportError as exc:
        raise SweepError(
            f"Ray is not installed in this Python environment ({exc}).\n"
            "Run with the Python that Flotilla set up, or use --local to run without Ray.",
            EXIT_NO_CLUSTER,
        ) from None
    if not quiet:
        print(f"connecting to Ray at {address} ...", file=sys.stderr, flush=True)
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # Ray raises several types for the same problem
        raise SweepError(
            f"Could not connect to the Ray cluster at {address!r}: {exc}\n"
            "Check that:\n"
            "  - the address is right (--address, or the RAY_ADDRESS environment variable);\n"
            "  - `flotilla up` is running, and this machine is part of the cluster;\n"
            "  - RAY_AUTH_TOKEN is set in this shell and matches the cluster's token.\n"
            "Use --local to run the sweep without a cluster.",
            EXIT_NO_CLUSTER,
        ) from None
    if not quiet:
        alive = [n for n in ray.nodes() if n.get("Alive")]
        cpus = int(ray.cluster_resources().get("CPU", 0))
        print(f"connected: {len(alive)} node{'s' if len(alive) != 1 else ''}, {cpus} CPUs",
              file=sys.stderr, flush=True)
    return ray


def _node_names(ray) -> dict[str, str]:
    """Node id -> readable name (Ray's node name, the node IP by default)."""
    names = {}
    for node in ray.nodes():
        names[node["NodeID"]] = (node.get("NodeName") or node.get("NodeManagerAddress")
                                 or node["NodeID"][:12])
    # Several nodes may share an address (e.g. on one test machine); keep them apart.
    counts = Counter(names.values())
    return {nid: name if counts[name] == 1 else f"{name} ({nid[:8]})"
            for nid, name in names.items()}


def run_ray(candles, grid, address, quiet=False, paths=0, seed=0):
    """Evaluate every grid point as its own Ray task, collecting results as
    they finish. Returns (results, nodes, timing, wall seconds); the clock
    starts once connected, so it measures the sweep rather than the handshake.

    The timing says, per node, when its first evaluation began and how long
    its evaluations took in all, by this process's clock alone (a result's
    arrival less the time it took), so other machines' clocks never enter.
    """
    ray = _connect(address, quiet)
    try:
        # Running as a script, Ray pickles these functions by value. When this
        # file is imported as a module instead, workers could not import it,
        # so ask for the same treatment explicitly.
        if __name__ != "__main__":
            ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        task = ray.remote(num_cpus=1)(_run_one_on_ray)

        start = time.perf_counter()
        # One copy of the candles in the object store, shared by every task
        # on a node instead of being serialised into each call.
        data = ray.put(candles)
        pending = [task.remote(data, idx, params, paths, seed) for idx, params in enumerate(grid)]
        results, by_node, first, busy = [], Counter(), {}, Counter()
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    result, node_id, took = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise SweepError(f"an evaluation failed: {exc}", EXIT_TASK_FAILED) from None
                began = max(0.0, time.perf_counter() - start - took)
                first[node_id] = min(first.get(node_id, began), began)
                busy[node_id] += took
                results.append(result)
                by_node[node_id] += 1
                _progress(len(results), len(grid), result, quiet)
        wall = time.perf_counter() - start

        names = _node_names(ray)
        name = lambda nid: names.get(nid, nid[:12])
        nodes = dict(sorted((name(nid), count) for nid, count in by_node.items()))
        timing = {name(nid): {"first_s": round(first[nid], 3), "busy_s": round(busy[nid], 3)}
                  for nid in sorted(by_node, key=name)}
        return results, nodes, timing, wall
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def format_table(results: list[dict], top: int = 10) -> str:
    best = sorted(results, key=lambda r: (-r["sharpe"], r["id"]))[:top]
    robust = any("robustness" in r for r in results)
    header = (f"{'rank':>4} {'id':>4} {'fast':>5} {'slow':>5} {'stop':>6} "
              f"{'sharpe':>7} {'return':>11} {'max dd':>7} {'trades':>7}")
    if robust:
        header += f" {'p5 sharpe':>9} {'profitable':>10}"
    lines = [header]
    for rank, r in enumerate(best, 1):
        p = r["params"]
        line = (
            f"{rank:>4} {r['id']:>4} {p['fast']:>5} {p['slow']:>5} {p['stop_loss']:>6.1%} "
            f"{r['sharpe']:>7.2f} {r['total_return']:>+11.1%} {r['max_drawdown']:>7.1%} "
            f"{r['trades']:>7}"
        )
        if robust:
            rb = r["robustness"]
            line += f" {rb['sharpe_p05']:>9.2f} {rb['profitable_share']:>10.0%}"
        lines.append(line)
    return "\n".join(lines)


def summary_line(done: int, total: int, seconds: float, nodes: dict) -> str:
    k = len(nodes)
    return f"{done}/{total} evaluations in {seconds:.1f} s on {k} node{'s' if k != 1 else ''}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Sweep moving-average crossover parameters over synthetic "
                    "BTC-USD hourly candles, one Ray task per evaluation.")
    parser.add_argument("--candles", type=int, default=297_000,
                        help="number of hourly candles (default: 297000)")
    parser.add_argument("--evals", type=int, default=80,
                        help="number of parameter sets, taken in order from the grid (default: 80)")
    parser.add_argument("--seed", type=int, default=42, help="random seed for the candles (default: 42)")
    parser.add_argument("--local", action="store_true",
                        help="run in this process without Ray")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or "auto",
                        help="Ray cluster address (default: $RAY_ADDRESS, else 'auto')")
    parser.add_argument("--paths", type=int, default=0,
                        help="also backtest every parameter set on this many bootstrap "
                             "resamples of the market (blocks of a week) and report how its "
                             "Sharpe ratio holds up; each evaluation then costs about "
                             "paths + 1 times as much (default: 0)")
    parser.add_argument("--json", metavar="PATH", help="also write all results to this JSON file")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress or table, only the summary line")
    args = parser.parse_args(argv)
    if args.candles < 2:
        parser.error("--candles must be at least 2")
    if args.seed < 0:
        parser.error("--seed must be non-negative")
    if not 0 <= args.paths <= MAX_PATHS:
        parser.error(f"--paths must be between 0 and {MAX_PATHS}")
    try:
        args.grid = build_grid(args.evals)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    candles = generate_candles(args.candles, args.seed)

    try:
        if args.local:
            results, nodes, timing, wall = run_local(candles, args.grid, args.quiet, args.paths,
                                                     args.seed)
        else:
            results, nodes, timing, wall = run_ray(candles, args.grid, args.address, args.quiet,
                                                   args.paths, args.seed)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

    results.sort(key=lambda r: r["id"])
    if args.json:
        report = {
            "seed": args.seed,
            "candles": args.candles,
            "evals": len(args.grid),
            "paths": args.paths,
            "mode": "local" if args.local else "ray",
            "wall_seconds": wall,
            "results": results,
            "nodes": nodes,
            "timing": timing,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
            fh.write("\n")

    if not args.quiet:
        print(format_table(results))
        print()
        if not args.local:
            print("per node: " + ", ".join(f"{name}={count}" for name, count in nodes.items()))
    print(summary_line(len(results), len(args.grid), wall, nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
