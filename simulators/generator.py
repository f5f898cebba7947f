"""The simulated X-ray generator: tube physics, timing, heat and faults.

:class:`GeneratorModel` is the generator and tube:

* **limits** from :class:`~dios.devices.backends.GeneratorLimits` (kV 40-150, mA 10-1000,
  ms 1-10000, mAs 0.1-1000, maximum power ``kV * mA / 1000 <= max_power_kw``, mA ceilings
  per focus). A technique outside them is refused with ``OUT_OF_RANGE``.
* **prepare** (rotor boost and filament heating) takes 0.8 s of simulated time, 1.2 s when
  the technique needs more than half the maximum power (high-speed rotor).
* **exposure** lasts the exposure time in simulated time. Modes 0 (mA/ms) and 1 (mAs)
  deliver the set technique; mode 2 (AEC) integrates the dose seen by the selected
  ionisation chambers and terminates when it reaches the target (see :meth:`aec_mas`),
  or at the backup time (ms) if that comes first.
* **anode heat**: each exposure adds ``HU = k * kV * mAs`` (k = 1.35 for a
  high-frequency generator). The anode cools exponentially with the largest rate
  ``cooling_hu_per_s`` at full heat: ``dH/dt = -cooling * H / capacity``. A prepare or
  exposure whose heat would exceed the capacity is refused with ``TUBE_OVERHEAT``.
* **readback**: actual kV, mA and time deviate slightly from the set values (kV sd 0.5 %,
  mA sd 1 %, time sd 0.05 ms, from a seeded generator); mAs is actual mA * time.
* **DAP**: tube output ``Y = 50 uGy/mAs * (kV / 80)**2`` at 1 m times the nominal field
  (35 x 43 cm at the image receptor, projected to 1 m from the room's SID).

Faults come from a :class:`~simulators.faults.FaultInjector`: ``interlock_open`` refuses
prepare/exposure and is latched until a ``reset`` finds the door closed again;
``tube_overheat`` makes the anode report its heat limit. The communication faults
(``comm_timeout``, ``dropped_reply``) belong to the link and are applied by
:class:`SimGeneratorBackend` (in process) and by the wire server; ``link_hang`` (in
process only) blocks every call on the link until the fault is cleared, as a hung
serial line holds its caller.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import numpy as np

from dios.clock import REAL_TIME, SimClock
from dios.codes import (
    ABORTED,
    BAD_PARAMETER,
    BUSY,
    INTERLOCK_OPEN,
    OUT_OF_RANGE,
    TIMEOUT,
    TUBE_OVERHEAT,
    WRONG_STATE,
    DiosError,
)
from dios.devices.backends import ExposureRecord, GeneratorLimits, GeneratorReadback, Technique
from simulators.faults import FaultInjector
from simulators.room import XrayRoom, XrayShot

#: Real seconds between checks of a caller's cancel flag during a prepare or exposure.
_POLL_REAL_S = 0.002
#: heat-unit factor of a high-frequency (constant-potential) generator
HU_FACTOR_HF = 1.35
#: tube output at 1 m, 80 kV, in uGy per mAs
OUTPUT_UGY_PER_MAS_80KV = 50.0
#: AEC: chamber attenuation factors (left, centre, right) relative to the mean patient
AEC_CHAMBER_FACTORS = (0.7, 1.4, 0.7)
#: AEC: mAs a centre chamber needs at 70 kV for density 0 (scaled as (70 / kV)^3)
AEC_REF_MAS_70KV = 16.0
#: AEC: dose change per density step
AEC_DENSITY_STEP = 1.25
#: AEC: chamber and switch-off response time in ms
AEC_RESPONSE_MS = 1.0


def heat_units(kv: float, mas: float, k: float = HU_FACTOR_HF) -> float:
    """Anode heat units of one exposure: ``k * kV * mAs``."""
    return k * kv * mas


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


class GeneratorModel:
    """A high-frequency generator with a rotating-anode tube, in simulated time.

    Parameters
    ----------
    limits : GeneratorLimits, optional
        Generator and tube limits (defaults: :class:`GeneratorLimits`).
    clock : SimClock
        Simulated time for prep, exposure and cooling.
    faults : FaultInjector, optional
        Run-time faults (``interlock_open``, ``tube_overheat`` are used here).
    room : XrayRoom, optional
        Receives an :class:`~simulators.room.XrayShot` at the end of every exposure.
    seed : int
        Seed of the readback deviations.
    """

    def __init__(self, limits: GeneratorLimits | None = None, clock: SimClock = REAL_TIME,
                 faults: FaultInjector | None = None, room: XrayRoom | None = None,
                 seed: int = 0, field_cm: tuple[float, float] = (35.0, 43.0)) -> None:
        self.limits = limits or GeneratorLimits()
        self.clock = clock
        self.faults = faults or FaultInjector()
        self.room = room
        self.field_cm = field_cm
        self.technique = Technique()
        self.prepared = False
        self.exposing = False
        self.preparing = False
        self.latched = ""  # result-code name of a latched fault
        self.exposures = 0
        self._rng = np.random.default_rng(seed)
        self._heat = 0.0
        self._heat_t = clock.now()
        self._lock = threading.RLock()
        self._op_cancel = threading.Event()

    # --- heat --------------------------------------------------------------------------------
    def heat_hu(self) -> float:
        """Anode heat now, after cooling since the last update."""
        with self._lock:
            now = self.clock.now()
            dt = max(0.0, now - self._heat_t)
            lim = self.limits
            self._heat *= math.exp(-dt * lim.cooling_hu_per_s / lim.heat_capacity_hu)
            self._heat_t = now
            return self._heat

    def add_heat(self, hu: float) -> None:
        """Add ``hu`` heat units to the anode (cooling applied first)."""
        with self._lock:
            self._heat = self.heat_hu() + hu

    def heat_percent(self) -> float:
        """Anode heat as a percentage of capacity (100 while ``tube_overheat`` is injected)."""
        if self.faults.active("tube_overheat"):
            return 100.0
        return 100.0 * self.heat_hu() / self.limits.heat_capacity_hu

    # --- technique ---------------------------------------------------------------------------
    def ma_ceiling(self, kv: float, focus: int) -> float:
        """The mA ceiling at ``kv`` on ``focus`` (power and focus rating)."""
        lim = self.limits
        return min(lim.ma_max, lim.focus_ma_max[focus], lim.max_power_kw * 1000.0 / kv)

    def check(self, t: Technique) -> None:
        """Raise ``BAD_PARAMETER``/``OUT_OF_RANGE`` unless ``t`` is within the ratings."""
        lim = self.limits
        if t.mode not in (0, 1, 2) or t.focus not in (0, 1):
            raise DiosError(BAD_PARAMETER, f"mode {t.mode} / focus {t.focus}")
        if len(t.aec_field) != 3 or set(t.aec_field) - {"0", "1"} or t.aec_field == "000":
            raise DiosError(BAD_PARAMETER, f"AEC field {t.aec_field!r}")
        if not -5 <= t.aec_density <= 5:
            raise DiosError(OUT_OF_RANGE, f"AEC density {t.aec_density}")
        values = {"kV": (t.kv, lim.kv_min, lim.kv_max), "mA": (t.ma, lim.ma_min, lim.ma_max),
                  "ms": (t.ms, lim.ms_min, lim.ms_max), "mAs": (t.mas, lim.mas_min, lim.mas_max)}
        for name, (v, lo, hi) in values.items():
            if not (math.isfinite(v) and lo * (1 - 1e-6) <= v <= hi * (1 + 1e-6)):
                raise DiosError(OUT_OF_RANGE, f"{name} {v:g} outside {lo:g}..{hi:g}")
        if t.ma > self.ma_ceiling(t.kv, t.focus) * (1 + 1e-6):
            raise DiosError(OUT_OF_RANGE, f"{t.ma:g} mA at {t.kv:g} kV exceeds the tube rating")
        if abs(t.mas - t.ma * t.ms / 1000.0) > 0.01 * t.mas + 1e-3:
            raise DiosError(BAD_PARAMETER, f"mAs {t.mas:g} != mA {t.ma:g} x ms {t.ms:g} / 1000")

    def apply(self, t: Technique) -> Technique:
        """Accept ``t`` for the next exposure (refused while exposing)."""
        with self._lock:
            if self.exposing:
                raise DiosError(BUSY, "exposure in progress")
            self.check(t)
            self.technique = t
            return t

    def prep_time(self) -> float:
        """Rotor boost time in simulated seconds for the current technique."""
        t = self.technique
        return 1.2 if t.kv * t.ma / 1000.0 > 0.5 * self.limits.max_power_kw else 0.8

    def aec_mas(self, t: Technique) -> float:
        """mAs at which the AEC chambers reach their target dose for technique ``t``.

        The target is the centre-chamber reference ``AEC_REF_MAS_70KV * (70 / kV)^3``
        scaled by the mean attenuation of the selected chambers, by
        ``AEC_DENSITY_STEP ** density`` and by the room scene's ``aec_attenuation``.
        """
        chambers = [f for f, bit in zip(AEC_CHAMBER_FACTORS, t.aec_field, strict=True) if bit == "1"]
        factor = sum(chambers) / len(chambers) if chambers else 1.0
        scene = 1.0
        if self.room is not None:
            scene = float(self.room.scene.extra.get("aec_attenuation", 1.0))
        return AEC_REF_MAS_70KV * (70.0 / t.kv) ** 3 * factor * AEC_DENSITY_STEP ** t.aec_density * scene

    def planned(self, t: Technique) -> tuple[float, float, bool]:
        """(mAs, ms, terminated_by_aec) the exposure of ``t`` will deliver."""
        if t.mode != 2:
            return t.mas, t.ms, False
        need = self.aec_mas(t)
        ms = need * 1000.0 / t.ma + AEC_RESPONSE_MS
        if ms >= t.ms:
            return t.mas, t.ms, False
        return t.ma * ms / 1000.0, ms, True

    def dap(self, kv: float, mas: float) -> float:
        """Dose-area product in dGy*cm^2 for ``kv`` and ``mas``."""
        sid = self.room.scene.sid_cm if self.room is not None else 115.0
        k_1m_ugy = OUTPUT_UGY_PER_MAS_80KV * (kv / 80.0) ** 2 * mas
        area_1m = self.field_cm[0] * self.field_cm[1] * (100.0 / sid) ** 2
        return k_1m_ugy * area_1m * 1e-5

    # --- sequence ----------------------------------------------------------------------------
    def _check_interlock(self) -> None:
        if self.faults.active("interlock_open"):
            self.latched = INTERLOCK_OPEN.name
            self.prepared = False
            raise DiosError(INTERLOCK_OPEN, "door or safety circuit open")
        if self.latched:
            raise DiosError(INTERLOCK_OPEN if self.latched == INTERLOCK_OPEN.name else WRONG_STATE,
                            f"latched fault {self.latched}; send reset")

    def _check_heat(self, t: Technique) -> None:
        if self.faults.active("tube_overheat"):
            raise DiosError(TUBE_OVERHEAT, "anode at its heat limit", heat_percent=100.0)
        mas, _, _ = self.planned(t)
        need = heat_units(t.kv, mas)
        heat = self.heat_hu()
        if heat + need > self.limits.heat_capacity_hu:
            pct = 100.0 * heat / self.limits.heat_capacity_hu
            raise DiosError(TUBE_OVERHEAT,
                            f"anode {pct:.0f} % + {need:.0f} HU exceeds {self.limits.heat_capacity_hu:.0f} HU",
                            heat_percent=round(pct, 1))

    def check_prepare(self) -> None:
        """Raise the error a prepare would be refused with right now (BUSY, interlock, heat)."""
        with self._lock:
            if self.exposing:
                raise DiosError(BUSY, "exposure in progress")
            self._check_interlock()
            self._check_heat(self.technique)

    def prepare(self, cancel: threading.Event | None = None) -> None:
        """Boost the rotor and heat the filament; return when ready (or raise)."""
        with self._lock:
            self.check_prepare()
            self._op_cancel = op = threading.Event()
            self.preparing = True
            self.prepared = False
        try:
            if self._sleep(self.prep_time(), op, cancel):
                raise DiosError(ABORTED, "prepare aborted")
            with self._lock:
                self._check_interlock()
                self.prepared = True
        finally:
            self.preparing = False

    def expose(self, cancel: threading.Event | None = None) -> ExposureRecord:
        """Fire the prepared technique; block for the exposure time; return the readback."""
        with self._lock:
            if not self.prepared:
                raise DiosError(WRONG_STATE, "not prepared")
            self._check_interlock()
            t = self.technique
            self._check_heat(t)
            self._op_cancel = op = threading.Event()
            self.prepared = False
            self.exposing = True
        try:
            _, ms, by_aec = self.planned(t)
            start = self.clock.now()
            aborted = self._sleep(ms / 1000.0, op, cancel)
            if aborted:
                ms = min(ms, max(0.0, (self.clock.now() - start) * 1000.0))
            kv_act = _sig(t.kv * (1.0 + self._rng.normal(0.0, 0.005)), 4)
            ma_act = _sig(t.ma * (1.0 + self._rng.normal(0.0, 0.01)), 4)
            ms_act = _sig(max(0.1, ms + self._rng.normal(0.0, 0.05)), 4)
            mas_act = _sig(ma_act * ms_act / 1000.0, 4)
            hu = heat_units(kv_act, mas_act)
            self.add_heat(hu)
            self.exposures += 1
            record = ExposureRecord(
                kv=kv_act, ma=ma_act, ms=ms_act, mas=mas_act, focus=t.focus,
                dap_dgycm2=_sig(self.dap(kv_act, mas_act), 4), heat_hu=round(hu, 1),
                terminated_by_aec=by_aec and not aborted, timestamp=self.clock.now())
            if self.room is not None and mas_act > 0:
                self.room.emit(XrayShot(kv_act, ma_act, ms_act, mas_act, t.focus, record.timestamp))
            if aborted:
                raise DiosError(ABORTED, f"exposure aborted after {ms_act:g} ms",
                                record=dataclasses.asdict(record))
            return record
        finally:
            self.exposing = False

    def _sleep(self, seconds: float, op: threading.Event, cancel: threading.Event | None) -> bool:
        """Wait ``seconds`` of simulated time; True if the generator's own abort (``op``)
        or the caller's ``cancel`` came first."""
        if cancel is None:
            return self.clock.sleep(seconds, op)
        end = time.monotonic() + self.clock.real(seconds)
        while not (op.is_set() or cancel.is_set()):
            left = end - time.monotonic()
            if left <= 0:
                return False
            op.wait(min(left, _POLL_REAL_S))
        return True

    def abort(self) -> None:
        """Stop a running prepare or exposure and drop the prepared state."""
        with self._lock:
            self._op_cancel.set()
            self.prepared = False

    def reset(self) -> None:
        """Clear latched faults; ``INTERLOCK_OPEN`` again while the door is still open."""
        with self._lock:
            if self.faults.active("interlock_open"):
                self.latched = INTERLOCK_OPEN.name
                raise DiosError(INTERLOCK_OPEN, "door or safety circuit still open")
            self.latched = ""
            self.prepared = False

    def readback(self) -> GeneratorReadback:
        """Interlock, heat and the active fault (result-code name, empty if none)."""
        closed = not self.faults.active("interlock_open")
        fault = self.latched or ("" if closed else INTERLOCK_OPEN.name)
        if not fault and self.faults.active("tube_overheat"):
            fault = TUBE_OVERHEAT.name
        heat = self.heat_hu()
        return GeneratorReadback(interlock_closed=closed, heat_hu=heat,
                                 heat_percent=self.heat_percent(), fault=fault)


class SimGeneratorBackend:
    """:class:`~dios.devices.backends.GeneratorBackend` on a :class:`GeneratorModel`, in process.

    The link faults act here: while ``comm_timeout`` is active every call raises
    ``TIMEOUT`` without reaching the model; a ``dropped_reply`` lets the call reach the
    model (the action happens) and then raises ``TIMEOUT`` as the reply never arrives.

    Parameters
    ----------
    clock : SimClock
        Simulated time.
    room : XrayRoom, optional
        Receives the shots.
    faults : FaultInjector, optional
        Shared fault switchboard (one is made if omitted).
    limits : GeneratorLimits, optional
        Ratings of the simulated generator.
    seed : int
        Seed of the readback deviations.
    """

    name = "Simulator"

    def __init__(self, clock: SimClock = REAL_TIME, room: XrayRoom | None = None,
                 faults: FaultInjector | None = None, limits: GeneratorLimits | None = None,
                 seed: int = 0) -> None:
        self.faults = faults or FaultInjector()
        self.model = GeneratorModel(limits, clock, self.faults, room, seed)
        self.clock = clock
        self.connected = False

    def _link(self) -> None:
        while self.faults.active("link_hang"):  # a hung link: the caller's thread waits
            time.sleep(0.01)
        if self.faults.active("comm_timeout"):
            raise DiosError(TIMEOUT, "generator does not answer")

    def _reply(self) -> None:
        if self.faults.consume("dropped_reply"):
            raise DiosError(TIMEOUT, "reply lost")

    def connect(self) -> None:
        self._link()
        self.connected = True
        self._reply()

    def close(self) -> None:
        self.connected = False

    def limits(self) -> GeneratorLimits:
        self._link()
        out = self.model.limits
        self._reply()
        return out

    def apply(self, technique: Technique) -> Technique:
        self._link()
        out = self.model.apply(technique)
        self._reply()
        return out

    def prepare(self, cancel: threading.Event) -> None:
        self._link()
        self.model.prepare(cancel)
        self._reply()

    def expose(self, cancel: threading.Event) -> ExposureRecord:
        self._link()
        out = self.model.expose(cancel)
        self._reply()
        return out

    def abort(self) -> None:
        self._link()
        self.model.abort()
        self._reply()

    def reset(self) -> None:
        self._link()
        self.model.reset()
        self._reply()

    def readback(self) -> GeneratorReadback:
        self._link()
        out = self.model.readback()
        self._reply()
        return out
