"""experiments/kernel_bench.py times every cell of one length interleaved.

The table's ratios (window vs causal, dispatcher vs fastest) compare cells, so the
timing must not favour one cell with a quiet stretch of the machine: each round calls
every cell once, in a rotated order. Checked here with a fake clock.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import kernel_bench  # noqa: E402


class FakeClock:
    """Advances by a per-call cost; the machine 'slows down' 3x after `slow_after` s."""

    def __init__(self, slow_after=float("inf")):
        self.t = 0.0
        self.slow_after = slow_after

    def __call__(self):
        return self.t

    def work(self, cost):
        self.t += cost * (3.0 if self.t >= self.slow_after else 1.0)


def make_calls(clock, costs, log):
    def call(name):
        def f():
            log.append(name)
            clock.work(costs[name])
            return 0
        return f
    return {name: call(name) for name in costs}


def test_rounds_rotate_and_every_cell_gets_every_round():
    clock, log = FakeClock(), []
    calls = make_calls(clock, {"a": 1.0, "b": 1.0, "c": 1.0}, log)
    out = kernel_bench.time_round_robin(calls, min_rounds=3, max_rounds=3, budget_s=1e9, settle=0, clock=clock)
    assert log[:3] == ["a", "b", "c"]  # warm-up
    assert log[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert out == {"a": (1.0, 3), "b": (1.0, 3), "c": (1.0, 3)}


class Aftermath(FakeClock):
    """A call right after a *different* call pays 2x (a big peer's freed buffers)."""

    last = None

    def work(self, cost, name=None):
        self.t += cost * (2.0 if name != self.last else 1.0)
        self.last = name


def test_settle_call_keeps_the_previous_cells_aftermath_out():
    clock, log = Aftermath(), []

    def call(name):
        def f():
            log.append(name)
            clock.work(1.0, name)
        return f
    calls = {"x": call("x"), "y": call("y")}
    out = kernel_bench.time_round_robin(calls, min_rounds=4, max_rounds=4, budget_s=1e9, settle=1, clock=clock)
    assert out == {"x": (1.0, 4), "y": (1.0, 4)}
    assert log[2:6] == ["x", "x", "y", "y"]  # after the warm-ups: untimed, timed per visit
    out = kernel_bench.time_round_robin(calls, min_rounds=4, max_rounds=4, budget_s=1e9, settle=0, clock=clock)
    assert all(median > 1.0 for median, _ in out.values())  # without settling: inflated


def test_drift_hits_every_cell_alike():
    # identical programs: a slowdown halfway through must not make one look 3x slower
    clock, log = FakeClock(slow_after=8.0), []
    calls = make_calls(clock, {"same_1": 1.0, "same_2": 1.0}, log)
    out = kernel_bench.time_round_robin(calls, min_rounds=6, max_rounds=6, budget_s=1e9, settle=0, clock=clock)
    assert out["same_1"][0] == pytest.approx(out["same_2"][0])


def test_budget_stops_rounds_after_the_minimum():
    clock, log = FakeClock(), []
    calls = make_calls(clock, {"slow": 10.0, "fast": 1.0}, log)
    out = kernel_bench.time_round_robin(calls, min_rounds=2, max_rounds=9, budget_s=0.5,
                                        settle=0, clock=clock)
    assert out["slow"][1] == out["fast"][1] == 2  # over budget, but the minimum is kept
    out = kernel_bench.time_round_robin(calls, min_rounds=2, max_rounds=9, budget_s=25.0,
                                        settle=0, clock=clock)
    assert out["slow"][1] == out["fast"][1] == 3  # 11 s per round: rounds start at 0, 11, 22
    cheap = make_calls(clock, {"a": 0.01}, log)
    out = kernel_bench.time_round_robin(cheap, min_rounds=2, max_rounds=9, budget_s=25.0,
                                        settle=0, clock=clock)
    assert out["a"][1] == 9  # cheap cells: up to max_rounds within the budget
