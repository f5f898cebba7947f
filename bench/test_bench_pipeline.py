"""Pipeline speed and memory per panel size, against the memory floor and the OpenCV peer.

Per size the benchmark times :meth:`processing.pipeline.Pipeline.run` (all stages,
collimation included, fresh output arrays, calibration maps applied) and records in
``extra_info``:

* ``total_ms`` (and ``total_max_ms``): the median (and slowest) of the benchmark's rounds,
  frames back to back as in a fluoroscopy loop;
* ``stages_ms``: median per-stage milliseconds from the pipeline's own timings;
* ``mixed_ms``: the median of further runs, each between a run of the floor and one of the
  peer (which evict the caches); the two ratios are taken on these;
* ``floor_ms`` and ``ratio_floor``: one read-write pass of the frame (uint16 in, float32
  out, preallocated; a parallel numba kernel), timed interleaved with the pipeline in the
  same run, and mixed / floor;
* ``peer_ms`` and ``ratio_peer``: :mod:`bench.opencv_peer` (the same stages from OpenCV
  primitives), timed in the same run, and peer / mixed;
* ``peak_extra_bytes`` / ``peak_extra_x_raw``: peak resident memory above the level
  before the run, in multiples of the raw frame's bytes, measured in a fresh subprocess
  by resetting the kernel's RSS high-water mark (``/proc/self/clear_refs`` = 5) and
  reading ``VmHWM``: the first frame of a new pipeline (its working buffers, the result
  arrays and all temporaries; kernels already loaded). ``steady_peak_x_raw`` is the same
  for a later frame once the previous result was dropped (the pipeline reuses its
  buffers). This sees numpy, numba and OpenCV allocations alike, which tracemalloc does
  not;
* ``first_frame_s``: in the same fresh subprocess, import + ``Pipeline(...)`` + the first
  ``run`` with the numba kernels loaded from their on-disk cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SIZES
from opencv_peer import OpenCVPipeline

from processing import _kernels as K
from processing.pipeline import Pipeline

ROUNDS = {"1024x1024": 60, "2304x2800": 15, "3072x3072": 15, "4288x4288": 11}
PEER_ROUNDS = {"1024x1024": 9, "2304x2800": 5, "3072x3072": 5, "4288x4288": 3}
ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from processing.calibration import CalibrationMaps
from processing.pipeline import Pipeline
raw = np.load(sys.argv[1]); maps = CalibrationMaps.load(sys.argv[2])
profile, cpu = sys.argv[3], float(sys.argv[4])

def rss():
    kv = dict(l.split(':', 1) for l in open('/proc/self/status'))
    return (int(kv['VmRSS'].split()[0]) * 1024, int(kv['VmHWM'].split()[0]) * 1024)

def reset():
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')

t_load = time.perf_counter() - t0
t1 = time.perf_counter()
p = Pipeline(profile)
r = p.run(raw, maps, counts_per_ugy=cpu)
first = time.perf_counter() - t1
del r, p
# peak memory of a new pipeline's first frame, kernels already loaded
p = Pipeline(profile)
reset(); base, _ = rss()
r = p.run(raw, maps, counts_per_ugy=cpu)
first_peak = rss()[1] - base
del r
r = p.run(raw, maps, counts_per_ugy=cpu)
del r
reset(); base, _ = rss()
r = p.run(raw, maps, counts_per_ugy=cpu)
steady_peak = rss()[1] - base
print(json.dumps({"first_frame_s": first + t_load, "first_run_s": first,
                  "first_peak": first_peak, "steady_peak": steady_peak,
                  "workspace_bytes": p.workspace_bytes()}))
"""


def _probe(scene) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(scene.raw_path), str(scene.maps_path),
         scene.profile, repr(scene.counts_per_ugy)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ms(f) -> float:
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1e3


@pytest.mark.parametrize("size", list(SIZES))
def test_pipeline(benchmark, scenes, record_row, size):
    scene = scenes(size)
    raw, maps, cpu = scene.raw, scene.maps, scene.counts_per_ugy
    pipe = Pipeline(scene.profile, shape=raw.shape)
    stage_log: list[dict[str, float]] = []

    def run():
        r = pipe.run(raw, maps, counts_per_ugy=cpu)
        stage_log.append(r.timings)
        return r

    for _ in range(3):
        run()
    stage_log.clear()
    result = benchmark.pedantic(run, rounds=ROUNDS[size], iterations=1, warmup_rounds=1)

    # floor and peer in the same run, interleaved with the pipeline
    floor_out = np.empty(raw.shape, np.float32)
    K.memory_floor(raw, floor_out)
    peer = OpenCVPipeline()
    peer.run(raw, maps.offset, maps.gain, maps.defect, cpu)
    floor, peer_t, ours = [], [], []
    peer_stages: list[dict[str, float]] = []
    for k in range(max(ROUNDS[size] // 2, PEER_ROUNDS[size])):
        floor.append(_ms(lambda: K.memory_floor(raw, floor_out)))
        ours.append(_ms(run))
        if k < PEER_ROUNDS[size]:
            peer_t.append(_ms(lambda: peer_stages.append(
                peer.run(raw, maps.offset, maps.gain, maps.defect, cpu)[3])))
    stats = [t for t in stage_log]
    stages = {k: float(np.median([t[k] for t in stats])) for k in stats[0]}
    # back to back (the benchmark's rounds, caches warm as in a fluoroscopy loop) and
    # mixed (each run between the floor and the peer, which evict the caches)
    total = float(benchmark.stats.stats.median) * 1e3
    mixed = float(np.median(ours))
    probe = _probe(scene)
    raw_bytes = raw.nbytes
    truth = scene.truth
    info = {
        "size": size,
        "pixels": int(raw.size),
        "profile": scene.profile,
        "threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)),
        "stages_ms": stages,
        "total_ms": total,
        "total_max_ms": float(benchmark.stats.stats.max) * 1e3,
        "mixed_ms": mixed,
        "mp_per_s": raw.size / 1e6 / (total / 1e3),
        "floor_ms": float(np.median(floor)),
        "ratio_floor": mixed / float(np.median(floor)),
        "peer_ms": float(np.median(peer_t)),
        "peer_stages_ms": {k: float(np.median([t[k] for t in peer_stages]))
                           for k in peer_stages[0]},
        "ratio_peer": float(np.median(peer_t)) / mixed,
        "peak_extra_bytes": probe["first_peak"],
        "peak_extra_x_raw": probe["first_peak"] / raw_bytes,
        "steady_peak_x_raw": probe["steady_peak"] / raw_bytes,
        "workspace_bytes": probe["workspace_bytes"],
        "first_frame_s": probe["first_frame_s"],
        "first_run_s": probe["first_run_s"],
        "collimation": result.collimation.kind,
        "ei": result.ei,
        "ei_truth": 100.0 * truth.anatomy_dose_ugy,
    }
    benchmark.extra_info.update(info)
    record_row(info)
    assert result.image.shape == raw.shape
