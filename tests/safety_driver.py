"""A seeded random driver of the exposure path: several clients, faults, invariants.

Used by ``tests/test_exposure_safety.py`` (bounded, in ``make test``) and by
``bench/soak_safety.py`` (long runs, ``make soak``). Each *sequence* is a burst of random
operations sent by several client threads at once through the task service (the same
calls the HTTP and RPC shims make): image selection, whole exposures, raw device
commands (Prepare, Expose, Abort, Disconnect, Connect, ResetError, technique changes)
and fault injection. After each sequence the room is brought back to rest and these
invariants are checked:

* **no beam without an armed panel**: at every beam-on that reaches the generator's
  hardware the panel was armed and connected (checked at the hardware boundary, by
  wrapping the simulated generator backend's ``expose``, independently of the engine's
  own X-ray enable line);
* **every frame lands exactly once**: the exposure frames the detector read out equal
  the images stored plus the frames kept unassigned;
* **no reply contradicts the stored state**: a whole exposure that replied success has
  its image Exposed with its file on disk; one that replied an error left it not
  Exposed; an Expose command that was refused left its image Unexposed; at rest no image
  is left Exposing.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dios import topics
from dios.codes import DiosError
from dios.messages import EventKind
from dios.uri import DETECTOR, GENERATOR

FAULTS = ("interlock_open", "tube_overheat", "detector_disconnect", "lost_frame",
          "beam_missed", "dropped_reply")


@dataclass
class Tally:
    """What happened, for the report and the assertions."""

    sequences: int = 0
    operations: int = 0
    beams: int = 0
    beams_unarmed: int = 0
    frames: int = 0
    stored: int = 0
    unassigned: int = 0
    replies: Counter = field(default_factory=Counter)
    contradictions: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")

    def as_dict(self) -> dict[str, Any]:
        return {"sequences": self.sequences, "operations": self.operations,
                "beams": self.beams, "beams_without_armed_panel": self.beams_unarmed,
                "frames": self.frames, "images_stored": self.stored,
                "frames_unassigned": self.unassigned,
                "replies": dict(self.replies.most_common()),
                "contradictions": len(self.contradictions),
                "slowest_operation": [round(self.slowest[0], 2), self.slowest[1]]}


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


class SafetyDriver:
    """Drives ``services`` (a console's services on simulators) at random, seeded."""

    def __init__(self, services: Any, seed: int, clients: int = 3,
                 study_factory: Any = None) -> None:
        self.s = services
        self.engine = services.engine
        self.task = services.task
        self.rng = random.Random(seed)
        self.clients = clients
        self.study_factory = study_factory
        self.tally = Tally()
        self._lock = threading.Lock()
        self._results: list[tuple[str, str, str, str]] = []  # (op, sop, code, tx)
        self._frames = 0
        gen_backend = self.engine.generator.backend
        det_backend = self.engine.detector.backend
        real_expose = gen_backend.expose

        def checked_expose(cancel: threading.Event) -> Any:
            armed = bool(det_backend.armed and det_backend.connected)
            with self._lock:
                self.tally.beams += 1
                if not armed:
                    self.tally.beams_unarmed += 1
            return real_expose(cancel)

        gen_backend.expose = checked_expose
        self._stored_tx: dict[str, str] = {}  # transaction -> sop of each image.stored
        self._sub = self.engine.hub.subscribe(DETECTOR, handler=self._on_frame,
                                              kinds=[EventKind.IMAGE])
        self._sub2 = self.engine.hub.subscribe(topics.IMAGE_URI, handler=self._on_stored)

    def close(self) -> None:
        self._sub.close()
        self._sub2.close()

    def _on_stored(self, ev: Any) -> None:
        if ev.name == topics.IMAGE_STORED:
            with self._lock:
                self._stored_tx[ev.reqTransaction] = ev.value

    def _on_frame(self, ev: Any) -> None:
        frame = ev.data.get("frame")
        if getattr(frame, "kind", "") == "exposure":
            with self._lock:
                self._frames += 1

    # --- operations -------------------------------------------------------------------------
    def _sops(self) -> list[str]:
        st = self.study_factory()
        return [im["sop_instance_id"] for se in st["series"] for im in se["images"]]

    def _op(self, rng: random.Random, sops: list[str], client: str) -> None:
        t = self.task
        r = rng.random()
        sop = rng.choice(sops)
        tx = f"{client}-{rng.getrandbits(32):08x}"
        t0 = time.monotonic()
        try:
            if r < 0.18:
                op = "expose"
                t.expose(sop, tx, client, timeout=30.0)
            elif r < 0.26:
                op = "console_flow"  # select, prepare both, Expose as device commands
                t.select_image(sop, tx, client)
                for uri in (DETECTOR, GENERATOR):
                    t.device_command(_req(uri, "Prepare", "", tx, client))
                wait_until(lambda: self.engine.generator.status_string.rsplit("_", 1)[-1]
                           != "PREPARE", 30, "the generator's prepare")
                t.device_command(_req(GENERATOR, "Expose", "", tx, client))
            elif r < 0.30:
                op = "select"
                t.select_image(sop, tx, client)
            elif r < 0.34:
                op = "deselect"
                t.deselect_image()
            elif r < 0.46:
                op = "prepare"
                uri = rng.choice((DETECTOR, GENERATOR))
                t.device_command(_req(uri, "Prepare", "", tx, client))
            elif r < 0.60:
                op = "expose_cmd"
                sop = t.armed or ""
                t.device_command(_req(GENERATOR, "Expose", "", tx, client))
            elif r < 0.70:
                op = "abort"
                t.device_command(_req(rng.choice((DETECTOR, GENERATOR)), "Abort", "", tx, client))
            elif r < 0.74:
                op = "disconnect"
                t.device_command(_req(DETECTOR, "Disconnect", "", tx, client))
            elif r < 0.80:
                op = "recover"
                self._recover_once(tx, client)
            elif r < 0.86:
                op = "technique"
                name, value = rng.choice((("SetParam_KV", rng.choice(("60", "81", "110"))),
                                          ("SetParam_MAS", rng.choice(("0.5", "1", "2"))),
                                          ("IncParam_MA", "1")))
                t.device_command(_req(GENERATOR, name, value, tx, client))
            elif r < 0.92:
                op = "fault"
                name = rng.choice(FAULTS)
                which = "generator" if name in ("interlock_open", "tube_overheat",
                                                "dropped_reply") else "detector"
                persistent = name in ("interlock_open", "tube_overheat")
                self.engine.faults[which].inject(name, None if persistent else 1)
            else:
                op = "clear"
                for f in self.engine.faults.values():
                    f.clear()
            code = "SUCCESS"
        except DiosError as err:
            code = err.code.name
        took = time.monotonic() - t0
        with self._lock:
            if took > self.tally.slowest[0]:
                self.tally.slowest = (took, f"{op}:{code}")
            self.tally.operations += 1
            self.tally.replies[f"{op}:{code}"] += 1
            self._results.append((op, sop, code, tx))

    def _recover_once(self, tx: str, client: str) -> None:
        bus = self.engine.bus
        if self.engine.generator.status_string.endswith("ERROR"):
            bus.call(GENERATOR, "ResetError", "", tx, client)
        det = self.engine.detector.status_string
        if det.endswith("ERROR"):
            bus.call(DETECTOR, "ResetError", "", tx, client)
        if self.engine.detector.status_string.endswith("DISCONNECTED"):
            bus.call(DETECTOR, "Connect", "", tx, client)

    # --- rest and checks ----------------------------------------------------------------------
    def rest(self) -> None:
        """Clear faults and bring both devices and the lifecycle back to rest."""
        for f in self.engine.faults.values():
            f.clear()
        bus = self.engine.bus
        lc = self.task.lifecycle
        wait_until(lambda: lc.phase.value in ("Idle", "Planned"), 120, "the lifecycle at rest")
        try:
            self.task.deselect_image()
        except DiosError:
            pass
        for _ in range(50):
            g, d = self.engine.generator.status_string, self.engine.detector.status_string
            if g.endswith("STANDBY") and d.endswith("STANDBY"):
                break
            if g.endswith("ERROR"):
                bus.call(GENERATOR, "ResetError", "", "rest", "driver")
            elif g.rsplit("_", 1)[-1] in ("PREPARE", "READY", "EXPOSURE"):
                bus.call(GENERATOR, "Abort", "", "rest", "driver")
            elif g.endswith("INIT"):
                bus.call(GENERATOR, "Initialize", "", "rest", "driver")
            if d.endswith("ERROR"):
                bus.call(DETECTOR, "ResetError", "", "rest", "driver")
            elif d.endswith("DISCONNECTED"):
                bus.call(DETECTOR, "Connect", "", "rest", "driver")
            elif d.rsplit("_", 1)[-1] in ("READY", "ACQUIRING", "READOUT"):
                bus.call(DETECTOR, "Abort", "", "rest", "driver")
            time.sleep(0.01)
        wait_until(lambda: lc.phase.value == "Idle", 120, "the lifecycle idle")

    def sequence(self, ops: int = 12) -> None:
        """One burst: ``clients`` threads send ``ops`` random operations each, at once."""
        sops = self._sops()
        seeds = [self.rng.getrandbits(64) for _ in range(self.clients)]
        start = threading.Barrier(self.clients)

        def client(i: int) -> None:
            rng = random.Random(seeds[i])
            start.wait()
            for _ in range(ops):
                self._op(rng, sops, f"client{i}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(600)
        self.rest()
        self.tally.sequences += 1
        self.check(sops)

    def check(self, sops: list[str]) -> None:
        lc = self.task.lifecycle
        # frames are announced before they are stored: wait for the accounting to settle
        try:
            wait_until(lambda: self._frames == lc.stored + lc.unassigned, 60,
                       "every frame stored or kept unassigned")
        except AssertionError:
            self.tally.contradictions.append(
                f"frames {self._frames} != stored {lc.stored} + unassigned {lc.unassigned}")
        self.tally.frames, self.tally.stored = self._frames, lc.stored
        self.tally.unassigned = lc.unassigned
        images = {sop: self.s.study.image(sop) for sop in sops}
        for sop, im in images.items():
            if im["expose_status"] == "Exposing":
                self.tally.contradictions.append(f"{sop} left Exposing")
            if im["expose_status"] == "Exposed" and not self.task.image_path(sop).is_file():
                self.tally.contradictions.append(f"{sop} Exposed without its file")
        with self._lock:
            results, self._results = self._results, []
        # events reach this driver on its own subscription thread: give the announcements
        # of the exposures that replied success time to arrive before judging
        wanted = {tx for op, _, code, tx in results if op == "expose" and code == "SUCCESS"}
        try:
            wait_until(lambda: wanted <= set(self._stored_tx), 60, "image.stored events")
        except AssertionError:
            pass  # judged below, transaction by transaction
        with self._lock:
            stored_tx = dict(self._stored_tx)
        for op, sop, code, tx in results:
            if op != "expose":
                continue
            # a whole exposure's reply is its one outcome: success exactly when its
            # transaction stored an image, and then that very image is Exposed
            if code == "SUCCESS":
                if stored_tx.get(tx) != sop:
                    self.tally.contradictions.append(
                        f"expose {tx} of {sop} replied success, stored {stored_tx.get(tx)}")
                elif images.get(sop, {}).get("expose_status") != "Exposed":
                    self.tally.contradictions.append(f"expose {tx} replied success, {sop} "
                                                     "not Exposed")
            elif tx in stored_tx:
                self.tally.contradictions.append(f"expose {tx} replied {code}, yet stored "
                                                 f"{stored_tx[tx]}")


def _req(uri: str, name: str, param: str, tx: str, client: str) -> dict[str, str]:
    return {"deviceUri": uri, "reqName": name, "reqParam": param, "reqTransaction": tx,
            "reqClientID": client}
