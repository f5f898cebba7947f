"""Bus request-to-reply latency, in process.

Run with ``make bench`` (or ``pytest bench/test_bench_bus.py --benchmark-only``). The
reference is the cost of a bare ``concurrent.futures`` round trip through a worker
thread, which is the floor of any threaded dispatcher; the ratio is measured in the
same run.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import pytest

from dios.bus import DeviceBus
from dios.engine import build_simulated_engine
from dios.messages import Request


@pytest.fixture(scope="module")
def engine():
    eng = build_simulated_engine(clock_scale=1.0, panel="FLUORO_1024")  # real time
    with eng:
        yield eng


def test_bus_get_param_latency(benchmark, engine):
    req = Request("DIOS/DEVICE/Generator", "GetParam_KV", "", "b", "bench")
    bus: DeviceBus = engine.bus
    reply = benchmark(bus.request, req)
    assert reply.ok
    benchmark.extra_info["what"] = "GetParam_KV request -> reply, in process"


def test_bus_set_param_latency(benchmark, engine):
    bus: DeviceBus = engine.bus
    values = iter(range(10**9))

    def send():
        return bus.request(Request("DIOS/DEVICE/Generator", "SetParam_KV",
                                   str(60 + next(values) % 40), "b", "bench"))

    reply = benchmark(send)
    assert reply.ok
    benchmark.extra_info["what"] = "SetParam_KV (validate, snap, publish PARAM event)"


def test_floor_thread_round_trip(benchmark):
    """Baseline: a Future resolved by a worker thread (the dispatcher floor)."""
    q: queue.Queue = queue.Queue()

    def worker():
        while True:
            fut = q.get()
            if fut is None:
                return
            fut.set_result(1)

    t = threading.Thread(target=worker, daemon=True)
    t.start()

    def round_trip():
        f: Future = Future()
        q.put(f)
        return f.result()

    assert benchmark(round_trip) == 1
    q.put(None)
    benchmark.extra_info["what"] = "baseline: bare Future round trip through a thread"
