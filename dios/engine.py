"""Engine assembly: the bus with its devices, on simulators or real drivers.

This is the one place where backends are chosen and plugged into the device logic::

    from dios.engine import build_simulated_engine
    with build_simulated_engine(clock_scale=50) as eng:
        eng.bus.call("DIOS/DEVICE/Generator", "SetParam_KV", 81)

``assemble(generator_url, detector_url)`` builds the devices on the backends two URLs
name (:mod:`dios.backends`: ``simulator://``, ``serial:///dev/ttyUSB0?baud=19200``,
``socket://host:port``...) and wires the room's X-ray enable line between them;
``build_engine(config)`` does the same from a :class:`dios.config.Config`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulators.room import XrayRoom

from dios.bus import DeviceBus
from dios.clock import REAL_TIME, SimClock
from dios.codes import DiosError
from dios.config import Config
from dios.devices.detector import Detector
from dios.devices.generator import Generator
from dios.devices.interlock import XrayEnable
from dios.events import EventHub
from dios.messages import Event, EventKind
from dios.uri import DETECTOR, GENERATOR

log = logging.getLogger(__name__)


@dataclass
class Engine:
    """The running engine: event hub, bus, devices and (on simulators) the X-ray room."""

    hub: EventHub
    bus: DeviceBus
    generator: Generator
    detector: Detector
    clock: SimClock
    room: XrayRoom | None = None
    faults: dict[str, Any] = field(default_factory=dict)
    config: Config | None = None
    panel: str = ""
    xray_enable: XrayEnable | None = None
    bridge: Any = None
    #: the loopback beam trigger of a ``?xrays=beam`` simulated detector (started with the engine)
    beam: Any = None
    _started: bool = False

    @property
    def drivers_info(self) -> dict[str, str]:
        """Backend names as the software-info reply shows them (``FPD``, ``GEN``)."""
        return {"FPD": self.detector.backend.name, "GEN": self.generator.backend.name}

    def set_scene(self, phantom: str = "chest", sid_cm: float = 115.0,
                  collimation: Any = None) -> None:
        """Set what the simulated beam meets (no effect on real hardware)."""
        if self.room is None:
            return
        from simulators.room import Scene

        self.room.scene = Scene(sid_cm=sid_cm, collimation=collimation, phantom=phantom)

    def set_geometry(self, sid_cm: float | None) -> None:
        """The source-image distance of the next exposure (the simulated beam's; real
        hardware positions itself)."""
        if self.room is None or not sid_cm:
            return
        import dataclasses

        self.room.scene = dataclasses.replace(self.room.scene, sid_cm=float(sid_cm))

    def start(self) -> Engine:
        """Start the bus, initialise the generator and connect the detector."""
        if self._started:
            return self
        self.bus.start()
        self._started = True
        if self.beam is not None:
            self.beam.start()
            log.info("beam trigger: shots into the simulated room on 127.0.0.1:%d", self.beam.port)
        try:
            self.bus.call(GENERATOR, "Initialize", "", "start", "engine").raise_for_error()
            self.bus.call(DETECTOR, "Connect", "", "start", "engine").raise_for_error()
            if self.panel:
                self.bus.call(DETECTOR, "SelectMode", self.panel, "start", "engine").raise_for_error()
        except DiosError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.bridge is not None:
            self.bridge.close()
        if self.beam is not None:
            self.beam.close()
        self.bus.stop()
        for backend in (self.generator.backend, self.detector.backend):
            close = getattr(backend, "close", None) or getattr(backend, "disconnect", None)
            try:
                if close:
                    close()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                log.exception("closing %s", backend)

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def assemble(generator: str = "simulator://", detector: str = "simulator://", *,
             clock_scale: float = 1.0, panel: str = "", seed: int = 0,
             calibration_dir: str | Path | None = None, timeout: float = 10.0) -> Engine:
    """An engine on the backends the two device URLs name (see :mod:`dios.backends`).

    Simulated backends share one X-ray room and run on a simulation clock of
    ``clock_scale``; real backends, and the devices driving them, run on the wall clock.
    A simulated detector takes its X-rays from the room (the simulated generator's shots)
    or, beside any other generator, from the generator's exposure events on the bus
    (``?xrays=events``, the default then): a generator-only bench runs end to end.
    """
    from dios import backends
    from simulators.room import XrayRoom

    clock = SimClock(clock_scale)
    hub = EventHub()
    bus = DeviceBus(hub, timeout=timeout)
    room = XrayRoom()
    gen_scheme, _ = backends.registry.lookup("generator", generator)
    _, det_url = backends.registry.lookup("detector", detector)
    xrays = det_url.query.get("xrays") or ("room" if gen_scheme.name == "simulator" else "events")
    ctx = backends.BuildContext(clock=clock, room=room if xrays == "room" else None, seed=seed,
                                calibration_dir=Path(calibration_dir) if calibration_dir else None)
    gen = backends.build("generator", generator, ctx)
    ctx.room = room
    det = backends.build("detector", detector, ctx)
    if clock_scale != 1.0 and not (gen.simulated and det.simulated):
        log.warning("clock_scale %g applies to the simulated devices only; the real %s runs "
                    "on the wall clock", clock_scale,
                    " and ".join(n for n, b in (("generator", gen), ("detector", det))
                                 if not b.simulated))
    line = XrayEnable()
    gen_dev = Generator(GENERATOR, hub, gen.backend, clock=clock if gen.simulated else REAL_TIME,
                        xray_enable=line)
    det_dev = Detector(DETECTOR, hub, det.backend, clock=clock if det.simulated else REAL_TIME,
                       calibration_dir=str(calibration_dir) if calibration_dir else None,
                       xray_enable=line)
    bus.register(gen_dev)
    bus.register(det_dev)
    engine = Engine(hub, bus, gen_dev, det_dev, clock, room, ctx.faults, panel=det.panel or panel,
                    xray_enable=line)
    if det.simulated and xrays == "events":
        engine.bridge = ExposureBridge(hub, room)
    if det.simulated and xrays == "beam":
        from simulators.beam import BeamTrigger

        engine.beam = BeamTrigger(room, port=det.beam_port,
                                  armed=lambda: bool(det_dev.xray_enable and det_dev.xray_enable.enabled))
    return engine


class ExposureBridge:
    """X-rays for a simulated panel from any generator's exposure events on the bus.

    Each finished exposure the generator device reports (its post-exposure readback:
    kV, mA, ms, mAs, focus) becomes a shot in the simulated room, so a real generator
    (over serial or TCP) exposes the simulated detector as it would a real one.
    """

    def __init__(self, hub: EventHub, room: XrayRoom) -> None:
        self.room = room
        self.shots = 0
        self._sub = hub.subscribe(GENERATOR, handler=self._on_event, kinds=[EventKind.EXPOSURE])

    def _on_event(self, ev: Event) -> None:
        from simulators.room import XrayShot

        rec = ev.data.get("record")
        if not isinstance(rec, dict) or not rec.get("mas"):
            return
        self.shots += 1
        self.room.emit(XrayShot(float(rec["kv"]), float(rec["ma"]), float(rec["ms"]),
                                float(rec["mas"]), int(rec.get("focus", 1)),
                                float(rec.get("timestamp", 0.0))))

    def close(self) -> None:
        self._sub.close()


def build_simulated_engine(clock_scale: float = 1.0, panel: str = "CSI_4343", seed: int = 0,
                           calibration_dir: str | Path | None = None,
                           timeout: float = 10.0, generator_url: str | None = None) -> Engine:
    """An engine on the detector simulator and the generator simulator (or, with
    ``generator_url``, any generator URL, e.g. ``socket://127.0.0.1:5001``)."""
    return assemble(generator_url or "simulator://", "simulator://", clock_scale=clock_scale,
                    panel=panel, seed=seed, calibration_dir=calibration_dir, timeout=timeout)


def build_engine(config: Config) -> Engine:
    """Build the engine the configuration describes (simulators unless configured)."""
    dev = config.devices
    config.ensure_dirs()
    engine = assemble(dev.generator, dev.detector, clock_scale=dev.clock_scale, panel=dev.panel,
                      seed=dev.seed, calibration_dir=config.data_dir / "calibration",
                      timeout=dev.timeout)
    engine.config = config
    return engine
