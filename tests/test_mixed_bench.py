"""Mixed benches: a simulated detector beside a generator the engine does not simulate.

* ``dios acquire`` end to end with the generator as the real serial driver over a pty
  against the standalone wire simulator (``python -m simulators.generator_wire``) and the
  simulated detector taking its X-rays from the generator's exposure events, the
  simulated side on ``clock_scale`` 50, the driver on the wall clock;
* the simulated panel exposed from exposure events and from the loopback beam trigger.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dios.acquisition.lifecycle import check
from dios.acquisition.waits import wait_status
from dios.engine import assemble
from dios.messages import EventKind
from dios.uri import DETECTOR, GENERATOR

ROOT = Path(__file__).resolve().parents[1]


def _read_endpoints(proc: subprocess.Popen, want: set[str], timeout: float = 120.0) -> dict:
    """The ``DIOS-WIRE <kind> <address>`` lines the standalone simulator prints."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    buf = b""
    while set(found) < want:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"wire simulator endpoints {want} not announced: {found}, "
                                 f"exit {proc.poll()}")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(proc.stdout.fileno(), 4096)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            words = line.decode().split()
            if len(words) == 3 and words[0] == "DIOS-WIRE":
                found[words[1]] = words[2]
    return found


@pytest.fixture()
def wire_pty():
    proc = subprocess.Popen([sys.executable, "-m", "simulators.generator_wire", "--pty",
                             "--clock-scale", "50"], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        yield _read_endpoints(proc, {"pty"})["pty"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_dios_acquire_with_the_serial_generator_over_a_pty(tmp_path, wire_pty):
    cfg = tmp_path / "bench.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[devices]\n'
                   f'generator = "serial://{wire_pty}?timeout=1&retries=2"\n'
                   'detector = "simulator://FLUORO_1024"\nclock_scale = 50\n')
    run = subprocess.run([sys.executable, "-m", "dios.cli", "acquire", "--config", str(cfg),
                          "--cal-frames", "2", "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads(run.stdout)
    assert info["study"]["expose_status"] == "Exposed"
    assert info["study"]["storage_status"] == "Saved"
    assert Path(info["dicom"]).is_file() and Path(info["preview"]).is_file()
    # the readback came from the wire simulator through the real driver
    assert info["delivered"]["kv"] == pytest.approx(info["technique"]["kv"], rel=0.03)
    assert info["ei"] > 0
    assert "generator=serial://" in run.stderr
    assert "clock_scale 50 applies to the simulated devices only" in run.stderr


def _frame_after(engine, fire, timeout: float = 60.0):
    sub = engine.hub.subscribe(DETECTOR, kinds=[EventKind.IMAGE])
    try:
        check(engine.bus.call(DETECTOR, "Prepare"))
        fire()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = sub.get(timeout=1.0)
            if ev is not None and ev.data.get("frame") is not None:
                return ev.data["frame"]
        raise AssertionError("no frame")
    finally:
        sub.close()


def test_panel_takes_xrays_from_exposure_events():
    """``?xrays=events``: the generator's reported exposure becomes the panel's shot."""
    engine = assemble("simulator://", "simulator://FLUORO_1024?xrays=events", clock_scale=100,
                      panel="FLUORO_1024")
    with engine:
        assert engine.bridge is not None
        assert engine.generator.backend.model.room is None  # no second path for X-rays

        def fire():
            check(engine.bus.call(GENERATOR, "SetParam_KV", "80"))
            check(engine.bus.call(GENERATOR, "Prepare"))
            wait_status(lambda: engine.generator.status_string, "GENERATOR_STATUS_READY", 60, "ready")
            check(engine.bus.call(GENERATOR, "Expose"))

        frame = _frame_after(engine, fire)
    assert frame.kind == "exposure" and frame.meta["kv"] == pytest.approx(80, rel=0.03)
    assert engine.bridge.shots == 1


def test_panel_takes_xrays_from_the_beam_trigger():
    """``?xrays=beam``: a bench sends ``shot KV MAS`` to the loopback trigger."""
    engine = assemble("simulator://", "simulator://FLUORO_1024?xrays=beam", clock_scale=100,
                      panel="FLUORO_1024")
    with engine:
        port = engine.beam.port
        replies = []

        def fire():
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                f = s.makefile("rwb")
                for line in (b"status\n", b"shot 90 2.5\n", b"shot 500 1\n"):
                    f.write(line)
                    f.flush()
                    replies.append(f.readline().decode().strip())

        frame = _frame_after(engine, fire)
    assert replies[0] == "ok shots=0 armed=1"
    assert replies[1] == "ok 1" and replies[2].startswith("error")
    assert frame.kind == "exposure" and frame.meta["kv"] == 90 and frame.meta["mas"] == 2.5
    # the engine's own generator fired nothing
    assert engine.xray_enable.beams == 0
