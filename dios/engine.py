"""Engine assembly: the bus with its devices, on simulators or real drivers.

This is the one place where backends are chosen and plugged into the device logic::

    from dios.engine import build_simulated_engine
    with build_simulated_engine(clock_scale=50) as eng:
        eng.bus.call("DIOS/DEVICE/Generator", "SetParam_KV", 81)

``build_engine(config)`` does the same from a :class:`dios.config.Config` (simulators by
default, ``serial:<url>`` for a real generator on a serial port or TCP bridge).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dios.bus import DeviceBus
from dios.clock import SimClock
from dios.codes import DiosError
from dios.config import Config
from dios.devices.detector import Detector
from dios.devices.generator import Generator
from dios.events import EventHub
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
    room: Any = None
    faults: dict[str, Any] = field(default_factory=dict)
    config: Config | None = None
    panel: str = ""
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

    def start(self) -> Engine:
        """Start the bus, initialise the generator and connect the detector."""
        if self._started:
            return self
        self.bus.start()
        self._started = True
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


def build_simulated_engine(clock_scale: float = 1.0, panel: str = "CSI_4343", seed: int = 0,
                           calibration_dir: str | Path | None = None,
                           timeout: float = 10.0, generator_url: str | None = None) -> Engine:
    """An engine on the detector simulator and the generator simulator (or, with
    ``generator_url``, a real generator reached through pyserial), sharing one X-ray room."""
    from simulators.detector import SimDetectorBackend
    from simulators.faults import FaultInjector
    from simulators.room import XrayRoom

    clock = SimClock(clock_scale)
    hub = EventHub()
    bus = DeviceBus(hub, timeout=timeout)
    room = XrayRoom()
    faults = {"detector": FaultInjector()}
    if generator_url:
        from drivers.generator_serial import SerialGeneratorBackend

        gen_backend: Any = SerialGeneratorBackend(generator_url, clock=clock)
    else:
        from simulators.generator import SimGeneratorBackend

        faults["generator"] = FaultInjector()
        gen_backend = SimGeneratorBackend(clock=clock, room=room, faults=faults["generator"])
    det_backend = SimDetectorBackend(room=room, clock=clock, seed=seed, faults=faults["detector"])
    generator = Generator(GENERATOR, hub, gen_backend, clock=clock)
    detector = Detector(DETECTOR, hub, det_backend, clock=clock,
                        calibration_dir=str(calibration_dir) if calibration_dir else None)
    bus.register(generator)
    bus.register(detector)
    return Engine(hub, bus, generator, detector, clock, room, faults, panel=panel)


def generator_url(spec: str) -> str | None:
    """The pyserial URL of a ``[devices] generator`` setting, None for the simulator.

    ``serial:socket://127.0.0.1:5001`` and ``serial:///dev/ttyUSB0`` (a pyserial URL
    itself) are both accepted.
    """
    if spec == "simulator":
        return None
    if spec.startswith("serial://"):
        return spec
    return spec[len("serial:"):]


def build_engine(config: Config) -> Engine:
    """Build the engine the configuration describes (simulators unless configured)."""
    dev = config.devices
    config.ensure_dirs()
    engine = build_simulated_engine(dev.clock_scale, dev.panel, dev.seed,
                                    config.data_dir / "calibration",
                                    generator_url=generator_url(dev.generator))
    engine.config = config
    return engine
