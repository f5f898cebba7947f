"""Backend contracts: what a generator or detector device needs from its hardware.

A backend is the transport-and-hardware half of a device (ophyd-async style): the device
logic (state machine, parameter tables, validation, events) lives in
``dios.devices.generator`` / ``dios.devices.detector`` and talks only to these
protocols. Simulators (``simulators/``) and real drivers (``drivers/``) implement them;
tests swap the backend, never the device.

Backends report failures by raising :class:`dios.codes.DiosError` with the matching code
(``COMM_LOST``, ``TIMEOUT``, ``INTERLOCK_OPEN``, ``TUBE_OVERHEAT``,
``DETECTOR_DISCONNECTED``, ``FRAME_LOST``, ``DEVICE_FAULT``, ``OUT_OF_RANGE``,
``ABORTED``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorLimits:
    """The absolute limits of a generator and tube."""

    kv_min: float = 40.0
    kv_max: float = 150.0
    ma_min: float = 10.0
    ma_max: float = 1000.0
    ms_min: float = 1.0
    ms_max: float = 10000.0
    mas_min: float = 0.1
    mas_max: float = 1000.0
    max_power_kw: float = 80.0
    #: mA ceiling per focus: 0 = small, 1 = large
    focus_ma_max: tuple[float, float] = (400.0, 1000.0)
    #: anode heat capacity in heat units (HU) and the cooling rate in HU per second
    heat_capacity_hu: float = 300_000.0
    cooling_hu_per_s: float = 1_000.0


@dataclass(frozen=True)
class Technique:
    """The exposure technique sent to a generator.

    ``mode``: 0 = mA/ms (three-point), 1 = mAs (two-point), 2 = AEC. ``focus``: 0 small,
    1 large. ``aec_field``: three characters ``0``/``1`` for the left, centre and right
    chambers. ``aec_density``: -5..+5 density steps.
    """

    kv: float = 70.0
    ma: float = 125.0
    ms: float = 100.0
    mas: float = 12.5
    mode: int = 0
    focus: int = 1
    aec_field: str = "010"
    aec_density: int = 0


@dataclass(frozen=True)
class ExposureRecord:
    """What a generator actually delivered (post-exposure readback)."""

    kv: float
    ma: float
    ms: float
    mas: float
    focus: int
    dap_dgycm2: float
    heat_hu: float
    terminated_by_aec: bool = False
    timestamp: float = 0.0


@dataclass(frozen=True)
class GeneratorReadback:
    """The generator's own status (polled)."""

    interlock_closed: bool = True
    heat_hu: float = 0.0
    heat_percent: float = 0.0
    fault: str = ""  # empty when none; otherwise the result-code name


@runtime_checkable
class GeneratorBackend(Protocol):
    """The hardware half of a generator."""

    name: str  #: shown in software info (``Simulator``, ``SerialGenerator``, ...)

    def connect(self) -> None: ...
    def close(self) -> None: ...
    def limits(self) -> GeneratorLimits: ...
    def apply(self, technique: Technique) -> Technique:
        """Send the technique; return the one the hardware accepted."""
        ...
    def prepare(self, cancel: threading.Event) -> None:
        """Start the rotor and filament boost; return when the tube is ready (or raise)."""
        ...
    def expose(self, cancel: threading.Event) -> ExposureRecord:
        """Fire with the applied technique; block for the exposure; return the readback."""
        ...
    def abort(self) -> None: ...
    def reset(self) -> None:
        """Clear latched faults (fails with the fault's code if its cause persists)."""
        ...
    def readback(self) -> GeneratorReadback: ...


# --------------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelMode:
    """An acquisition mode of a detector panel."""

    name: str
    rows: int
    cols: int
    pixel_pitch_mm: float
    bits: int
    description: str = ""
    #: detector counts (after offset/gain correction) per uGy of air kerma at RQA5;
    #: the exposure-index calibration factor
    counts_per_ugy: float = 100.0
    readout_s: float = 0.3
    #: True when the panel detects the X-ray onset itself (AED); otherwise it is synced
    aed: bool = True


@dataclass
class Frame:
    """A raw frame read out of a detector, with metadata and (simulators only) ground truth."""

    pixels: np.ndarray  # (rows, cols) uint16
    mode: PanelMode
    kind: str = "exposure"  # exposure | dark | flat
    meta: dict[str, Any] = field(default_factory=dict)
    truth: Any = None  # simulators.frames.FrameTruth on simulators, None on hardware


ProgressCallback = Callable[[float, str], None]


@runtime_checkable
class DetectorBackend(Protocol):
    """The hardware half of a flat-panel detector."""

    name: str

    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def modes(self) -> list[PanelMode]: ...
    def select_mode(self, name: str) -> PanelMode: ...
    def arm(self) -> None:
        """Prepare to integrate (clear the panel, open the window)."""
        ...
    def read_frame(self, cancel: threading.Event, timeout: float) -> Frame:
        """Block until the integration window has closed and the frame is read out."""
        ...
    def trigger(self) -> None:
        """Software trigger: close the integration window now (dark frames, sync mode)."""
        ...
    def abort(self) -> None: ...
    def calibration_frame(self, kind: str, cancel: threading.Event, timeout: float) -> Frame:
        """Acquire one ``dark`` or ``flat`` (open-field) frame for calibration.

        A dark frame needs no X-rays; a flat frame on hardware waits for an open-field
        exposure, and on a simulator is synthesised at the mode's calibration dose.
        """
        ...
