"""Tests for the parameter sweep, in local mode only: no Ray cluster (or Ray
installation) is needed."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "sweep.py"
sys.path.insert(0, str(HERE))

import sweep  # noqa: E402

CANDLES = 5_000
EVALS = 8
SEED = 42

# Runs the script as __main__ with `import ray` made to fail, which proves
# local mode never touches Ray, and lets a test swap in a stand-in package.
RUN_WITHOUT_RAY = (
    "import runpy, sys; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.fixture(scope="module")
def candles():
    return sweep.generate_candles(CANDLES, SEED)


def run_cli(*args, block_ray=True, env=None):
    prefix = [sys.executable, "-c", RUN_WITHOUT_RAY] if block_ray else [sys.executable]
    return subprocess.run(prefix + [str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, env=env)


def reference_backtest(c, fast, slow, stop_loss):
    """Bar-by-bar version of the strategy rules, to check the vectorised one."""
    open_, low, close = c["open"].tolist(), c["low"].tolist(), c["close"].tolist()
    n = len(close)
    fast_ma = np.convolve(c["close"], np.ones(fast) / fast, "valid")
    slow_ma = np.convolve(c["close"], np.ones(slow) / slow, "valid")
    signal = [False] * (slow - 1) + (fast_ma[slow - fast:] > slow_ma).tolist()
    growth = [1.0] * n
    in_position, level, trades = False, None, 0
    for t in range(1, n):
        entering = not in_position and signal[t - 1] and not (t >= 2 and signal[t - 2])
        if entering:
            in_position, trades = True, trades + 1
            level = close[t - 1] * (1 - stop_loss) if stop_loss else None
        if not in_position:
            continue
        fee = (1 - sweep.FEE) if entering else 1.0
        if level is not None and low[t] <= level:
            growth[t] = min(open_[t], level) / close[t - 1] * fee * (1 - sweep.FEE)
            in_position = False
        elif not signal[t]:
            growth[t] = close[t] / close[t - 1] * fee * (1 - sweep.FEE)
            in_position = False
        else:
            growth[t] = close[t] / close[t - 1] * fee
    returns = np.array(growth) - 1.0
    equity = np.cumprod(np.array(growth))
    peak = np.maximum(np.maximum.accumulate(equity), 1.0)
    sharpe = returns.mean() / returns.std(ddof=1) * math.sqrt(24 * 365) if returns.std() else 0.0
    return {
        "sharpe": sharpe,
        "total_return": equity[-1] - 1.0,
        "max_drawdown": float(np.max(1.0 - equity / peak)),
        "trades": trades,
    }


def test_candles_are_deterministic_per_seed(candles):
    again = sweep.generate_candles(CANDLES, SEED)
    other = sweep.generate_candles(CANDLES, SEED + 1)
    for key in ("open", "high", "low", "close", "volume"):
        assert candles[key].dtype == np.float64
        assert candles[key].shape == (CANDLES,)
        assert candles[key].tobytes() == again[key].tobytes()
        assert candles[key].tobytes() != other[key].tobytes()


def test_candles_are_plausible(candles):
    o, h, lo, c, v = (candles[k] for k in ("open", "high", "low", "close", "volume"))
    assert o[0] == sweep.START_PRICE
    assert np.array_equal(o[1:], c[:-1])
    assert np.all(lo > 0) and np.all(v > 0)
    assert np.all(lo <= np.minimum(o, c)) and np.all(h >= np.maximum(o, c))
    hourly_vol = np.std(np.diff(np.log(c)))
    assert 0.003 < hourly_vol < 0.015


def test_grid_is_deterministic_and_prefix_stable():
    default = sweep.build_grid(80)
    assert default == [
        {"fast": f, "slow": s, "stop_loss": sl}
        for f in sweep.BASE_FAST for s in sweep.BASE_SLOW for sl in sweep.BASE_STOP
    ]
    big = sweep.build_grid(len(sweep.full_grid()))
    assert big[:80] == default
    assert sweep.build_grid(EVALS) == default[:EVALS]
    assert len({(p["fast"], p["slow"], p["stop_loss"]) for p in big}) == len(big)
    assert all(p["fast"] < p["slow"] for p in big)
    for bad in (0, len(big) + 1):
        with pytest.raises(ValueError):
            sweep.build_grid(bad)


def test_results_are_deterministic(candles):
    grid = sweep.build_grid(EVALS)
    first, _, _, _ = sweep.run_local(candles, grid, quiet=True)
    second, _, _, _ = sweep.run_local(sweep.generate_candles(CANDLES, SEED), grid, quiet=True)
    # Exact equality: floats must match bit for bit.
    assert first == second
    other, _, _, _ = sweep.run_local(sweep.generate_candles(CANDLES, SEED + 1), grid, quiet=True)
    assert other != first


def test_results_are_well_formed(candles):
    grid = sweep.build_grid(EVALS)
    results, nodes, _, seconds = sweep.run_local(candles, grid, quiet=True)
    assert nodes == {"local": EVALS}
    assert seconds >= 0
    assert [r["id"] for r in results] == list(range(EVALS))
    for r, params in zip(results, grid):
        assert set(r) == {"id", "params", "sharpe", "total_return", "max_drawdown", "trades"}
        assert r["params"] == params
        for key in ("sharpe", "total_return", "max_drawdown"):
            assert isinstance(r[key], float) and math.isfinite(r[key])
        assert isinstance(r["trades"], int) and r["trades"] >= 0
        assert 0.0 <= r["max_drawdown"] <= 1.0
        assert r["total_return"] > -1.0


def test_stop_loss_changes_results(candles):
    changed = 0
    for p in sweep.build_grid(EVALS):
        with_stop = sweep.evaluate(candles, p["fast"], p["slow"], p["stop_loss"])
        without = sweep.evaluate(candles, p["fast"], p["slow"], None)
        assert sweep.evaluate(candles, p["fast"], p["slow"], 0.0) == without
        # Entries come only from crossovers, so a stop changes how trades
        # end, never how many start.
        assert with_stop["trades"] == without["trades"]
        changed += with_stop != without
    assert changed > 0


@pytest.mark.parametrize("stop_loss", [None, 0.01, 0.02, 0.05])
@pytest.mark.parametrize("fast,slow", [(6, 96), (12, 168), (48, 720)])
def test_vectorised_backtest_matches_bar_by_bar_rules(candles, fast, slow, stop_loss):
    got = sweep.evaluate(candles, fast, slow, stop_loss)
    want = reference_backtest(candles, fast, slow, stop_loss)
    assert got["trades"] == want["trades"]
    for key in ("sharpe", "total_return", "max_drawdown"):
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key


def test_json_output_schema(tmp_path, candles):
    out = tmp_path / "results.json"
    proc = run_cli("--local", "--candles", str(CANDLES), "--evals", str(EVALS),
                   "--seed", str(SEED), "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(f"{EVALS}/{EVALS} evaluations in ")
    assert proc.stdout.strip().endswith(" s on 1 node")
    assert proc.stderr == ""

    report = json.loads(out.read_text())
    assert set(report) == {"seed", "candles", "evals", "paths", "mode", "wall_seconds", "results",
                           "nodes", "timing"}
    assert report["timing"]["local"]["first_s"] == 0.0
    assert report["timing"]["local"]["busy_s"] >= 0.0
    assert report["paths"] == 0
    assert report["seed"] == SEED
    assert report["candles"] == CANDLES
    assert report["evals"] == EVALS
    assert report["mode"] == "local"
    assert isinstance(report["wall_seconds"], float) and report["wall_seconds"] >= 0
    assert report["nodes"] == {"local": EVALS}
    assert [r["id"] for r in report["results"]] == list(range(EVALS))
    for r in report["results"]:
        assert set(r) == {"id", "params", "sharpe", "total_return", "max_drawdown", "trades"}
        assert set(r["params"]) == {"fast", "slow", "stop_loss"}

    # JSON round-trips floats exactly, so another process must agree bit for bit.
    expected, _, _, _ = sweep.run_local(candles, sweep.build_grid(EVALS), quiet=True)
    assert report["results"] == expected


def test_cli_prints_progress_and_table():
    proc = run_cli("--local", "--candles", str(CANDLES), "--evals", str(EVALS))
    assert proc.returncode == 0, proc.stderr
    progress = proc.stderr.splitlines()
    assert len(progress) == EVALS
    assert progress[0].startswith(f"[  1/{EVALS}] id=0 sharpe=")
    assert progress[-1].startswith(f"[  {EVALS}/{EVALS}] id={EVALS - 1} sharpe=")
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["rank", "id", "fast", "slow", "stop", "sharpe", "return",
                                "max", "dd", "trades"]
    assert len([ln for ln in lines[1:] if ln.strip()]) == EVALS + 1  # rows + summary
    assert lines[-1].startswith(f"{EVALS}/{EVALS} evaluations in ")


def test_missing_ray_is_a_clear_error():
    proc = run_cli("--candles", "500", "--evals", "2")
    assert proc.returncode != 0
    assert "Ray is not installed" in proc.stderr
    assert "--local" in proc.stderr


def test_unreachable_cluster_is_a_clear_error(tmp_path):
    # A stand-in `ray` package whose init fails the way a real one does
    # when nothing is listening at the address.
    fake = tmp_path / "ray"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "def init(address=None, **kwargs):\n"
        "    raise ConnectionError(f'Could not find any running Ray instance at {address}')\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    proc = run_cli("--candles", "500", "--evals", "2", "--address", "10.9.8.7:6379",
                   block_ray=False, env=env)
    assert proc.returncode != 0
    assert "10.9.8.7:6379" in proc.stderr
    assert "flotilla up" in proc.stderr
    assert "RAY_AUTH_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_resample_in_one_block_is_the_market_itself(candles):
    # One block of every bar, starting at the first move: the original market, rebuilt by
    # multiplying its own moves in order.
    rng = np.random.default_rng(0)
    again = sweep.resample(candles, CANDLES - 1, rng)
    for key in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(again[key], candles[key], rtol=1e-9, err_msg=key)


def test_resamples_are_deterministic_and_plausible(candles):
    a = sweep.resample(candles, sweep.BLOCK_HOURS, np.random.default_rng([SEED, 3]))
    b = sweep.resample(candles, sweep.BLOCK_HOURS, np.random.default_rng([SEED, 3]))
    c = sweep.resample(candles, sweep.BLOCK_HOURS, np.random.default_rng([SEED, 4]))
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
        assert a[key].shape == candles[key].shape
    assert a["close"].tobytes() != c["close"].tobytes()
    assert a["close"][0] == candles["close"][0]
    assert np.all(a["low"] > 0)
    assert np.all(a["low"] <= np.minimum(a["open"], a["close"]) * (1 + 1e-12))
    assert np.all(a["high"] >= np.maximum(a["open"], a["close"]) * (1 - 1e-12))
    # The moves are the market's own: every resampled hourly move is one of the original's.
    moves = np.sort(candles["close"][1:] / candles["close"][:-1])
    drawn = a["close"][1:] / a["close"][:-1]
    nearest = moves[np.clip(np.searchsorted(moves, drawn), 0, len(moves) - 1)]
    below = moves[np.clip(np.searchsorted(moves, drawn) - 1, 0, len(moves) - 1)]
    assert np.all(np.minimum(abs(nearest - drawn), abs(below - drawn)) < 1e-9)


def test_robustness_is_reported_and_deterministic(candles):
    grid = sweep.build_grid(3)
    first, _, _, _ = sweep.run_local(candles, grid, quiet=True, paths=4, seed=SEED)
    second, _, _, _ = sweep.run_local(candles, grid, quiet=True, paths=4, seed=SEED)
    assert first == second
    plain, _, _, _ = sweep.run_local(candles, grid, quiet=True)
    for r, p in zip(first, plain):
        rb = r.pop("robustness")
        assert r == p, "robustness must not change the evaluation itself"
        assert rb["paths"] == 4
        assert rb["sharpe_p05"] <= rb["sharpe_median"]
        assert 0.0 <= rb["profitable_share"] <= 1.0
    other, _, _, _ = sweep.run_local(candles, grid, quiet=True, paths=4, seed=SEED + 1)
    assert [r["robustness"] for r in other] != [r.get("robustness") for r in second]


def test_cli_paths_in_the_table_and_the_json(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("--local", "--evals", "3", "--candles", "2000", "--paths", "2",
                   "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "p5 sharpe" in proc.stdout
    report = json.loads(out.read_text())
    assert report["paths"] == 2
    assert all(r["robustness"]["paths"] == 2 for r in report["results"])
    bad = run_cli("--local", "--paths", "-1")
    assert bad.returncode == 2 and "--paths must be between 0 and" in bad.stderr
