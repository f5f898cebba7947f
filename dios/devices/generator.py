"""The X-ray generator device: state machine, technique rules, commands and events.

States and transitions
----------------------
The state machine is driven only by :data:`TRANSITIONS`. Besides the real transitions it
holds *admission* entries that map a state to itself (``set``, ``get``...): a command
whose event is missing for the current state is refused with ``WRONG_STATE`` and the
state is left alone.

==================== ============ ====================
from                 event        to
==================== ============ ====================
Initialization       connect      Standby
Standby              prepare      Preparation
Preparation          prepared     Ready
Preparation/Ready    abort        Standby
Ready                expose       ExposureInProgress
ExposureInProgress   done         Standby
ExposureInProgress   abort        Standby
Preparation/Ready/   refused      Standby (a refusal that is not a fault, e.g. tube heat)
ExposureInProgress
any but Error        fault        Error
Error                reset        Standby
Standby, Ready       set          (same) -- technique changes allowed
==================== ============ ====================

Technique rules
---------------
Values live on the generator's tables (:mod:`dios.devices.tables`: kV 1 kV steps, mA on
R'10, ms and mAs on R'20). A set first checks the absolute limits (outside them:
``OUT_OF_RANGE``), then snaps to the nearest table entry and then to the nearest entry
that keeps the whole technique *feasible*:

* the mA never exceeds the ceiling ``min(mA_max, focus ceiling, P_max * 1000 / kV)``
  (power kW = kV * mA / 1000), taken as the table entry not above it;
* mode 0 (mA/ms): mA and ms are set, mAs = mA * ms / 1000 is derived and must lie within
  the mAs limits; mode 1 (mAs) and mode 2 (AEC, where mAs and ms are the backup values):
  mA and mAs are set, ms = mAs * 1000 / mA is derived and must lie within the ms limits.

The value actually accepted is the reply's ``result``. Setting the *derived* quantity
(mAs in mode 0, ms in modes 1/2) keeps mA and moves the other set quantity to the table
entry that gives the closest result. kV and focus are always accepted as asked; if the mA
is then above the new ceiling it is lowered to the ceiling and, in mode 0, the ms raised
to the next table entry that keeps at least the former mAs (as consoles do to preserve
dose). Switching the mode snaps the quantity that becomes a set value onto its table.
Every changed value is published as a ``PARAM`` event.

Faults
------
Backend failures raised as :class:`~dios.codes.DiosError`:

* ``INTERLOCK_OPEN``, ``COMM_LOST``, ``TIMEOUT``, ``DEVICE_FAULT`` are *latched*: the
  device enters Error and publishes a ``FAULT`` event; ``ResetError`` leaves Error only
  when the backend confirms the cause is gone (otherwise it replies with the fault's code
  and stays in Error) and re-sends the technique.
* ``TUBE_OVERHEAT`` is *not latched*: the anode only needs time to cool. Prepare is
  refused with ``TUBE_OVERHEAT`` (device stays in Standby), a prepare or exposure the
  generator refuses for heat returns the device to Standby; a ``FAULT`` event with
  ``latched=False`` is published in every case.
* ``ABORTED`` of a prepare/exposure this device cancelled (``Abort``) is no fault; one
  the generator reports on its own (an abort from its console) is a refusal: the device
  returns to Standby and publishes a ``FAULT`` event with ``latched=False``.
* ``OUT_OF_RANGE``/``BAD_PARAMETER``/``BUSY``/``WRONG_STATE`` refusals of a technique by
  the hardware are replied as such, state and technique unchanged.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import threading
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

from dios.clock import REAL_TIME, SimClock
from dios.codes import (
    ABORTED,
    BAD_PARAMETER,
    COMM_LOST,
    DEVICE_FAULT,
    INTERLOCK_OPEN,
    INTERNAL,
    OUT_OF_RANGE,
    TIMEOUT,
    TUBE_OVERHEAT,
    DiosError,
    ResultCode,
)
from dios.devices.backends import (
    ExposureRecord,
    GeneratorBackend,
    GeneratorLimits,
    GeneratorReadback,
    Technique,
)
from dios.devices.base import Device, command, parse_choice, parse_float, parse_int
from dios.devices.interlock import XrayEnable
from dios.devices.tables import GeneratorTables, ValueTable, fmt
from dios.events import EventHub
from dios.fsm import StateMachine
from dios.messages import EventKind

T = TypeVar("T")
log = logging.getLogger(__name__)


class GeneratorState(Enum):
    """Generator states; the value is the seed's status-string suffix."""

    Initialization = "INIT"
    Standby = "STANDBY"
    Preparation = "PREPARE"
    Ready = "READY"
    ExposureInProgress = "EXPOSURE"
    Error = "ERROR"


S = GeneratorState

#: The explicit transition table (see the module docstring).
TRANSITIONS: dict[tuple[GeneratorState, str], GeneratorState] = {
    (S.Initialization, "connect"): S.Standby,
    (S.Standby, "prepare"): S.Preparation,
    (S.Preparation, "prepared"): S.Ready,
    (S.Preparation, "abort"): S.Standby,
    (S.Preparation, "refused"): S.Standby,
    (S.Ready, "expose"): S.ExposureInProgress,
    (S.Ready, "abort"): S.Standby,
    (S.Ready, "refused"): S.Standby,
    (S.ExposureInProgress, "done"): S.Standby,
    (S.ExposureInProgress, "abort"): S.Standby,
    (S.ExposureInProgress, "refused"): S.Standby,
    (S.Error, "reset"): S.Standby,
    # admission: technique changes
    (S.Standby, "set"): S.Standby,
    (S.Ready, "set"): S.Ready,
    **{(s, "fault"): S.Error for s in GeneratorState if s is not S.Error},
}

#: Backend error codes that latch the device in Error.
LATCHED = frozenset({INTERLOCK_OPEN, COMM_LOST, TIMEOUT, DEVICE_FAULT, INTERNAL})

#: reqName suffix -> Technique field for the numeric table parameters
_NUMERIC = {"KV": "kv", "MA": "ma", "MS": "ms", "MAS": "mas"}
_FOCUS = {"0": 0, "1": 1, "SMALL": 0, "LARGE": 1}
_MODES = {"0": 0, "1": 1, "2": 2, "MA_MS": 0, "MAMS": 0, "MAS": 1, "AEC": 2}
_MODE_NAMES = ("MA_MS", "MAS", "AEC")
#: AEC chamber patterns in step order (binary value 001 .. 111)
AEC_FIELDS = tuple(format(i, "03b") for i in range(1, 8))
AEC_DENSITY = (-5, 5)
MAX_STEPS = 1000
_PARAM_OF_FIELD = {"kv": "KV", "ma": "MA", "ms": "MS", "mas": "MAS", "focus": "Focus",
                   "aec_field": "AECField", "aec_density": "AECDensity", "mode": "Technique"}


def _sig(x: float) -> float:
    """A derived value rounded to 4 significant digits (what a console displays)."""
    return float(f"{x:.4g}")


def technique_dict(t: Technique) -> dict[str, Any]:
    """``t`` with the seed's field names (``kV``, ``mA``, ``ms``, ``mAs``, ...)."""
    return {"kV": t.kv, "mA": t.ma, "ms": t.ms, "mAs": t.mas, "ExposureMode": t.mode,
            "Focus": t.focus, "AECField": t.aec_field, "AECDensity": t.aec_density}


class Generator(Device):
    """The generator device on the bus (``DIOS/DEVICE/Generator``).

    Parameters
    ----------
    uri : str
        The device URI.
    hub : EventHub
        Where events are published.
    backend : GeneratorBackend
        The hardware half (simulator or driver).
    clock : SimClock
        Simulated time used by the device's jobs.
    xray_enable : XrayEnable, optional
        The room's X-ray enable line: ``Expose`` reaches the hardware only while the
        detector is armed for it, and the beam stops when the detector drops out. None
        (a generator on its own, e.g. a service bench) fires without that check.
    """

    status_prefix = "GENERATOR_STATUS_"

    def __init__(self, uri: str, hub: EventHub, backend: GeneratorBackend,
                 clock: SimClock = REAL_TIME, xray_enable: XrayEnable | None = None) -> None:
        super().__init__(uri, hub, clock)
        self.backend = backend
        self.xray_enable = xray_enable
        #: why the X-ray enable line stopped the beam in progress ("" when it did not)
        self._beam_stopped = ""
        if xray_enable is not None:
            xray_enable.set_terminator(self._stop_beam)
        self.fsm = StateMachine("Generator", TRANSITIONS, S.Initialization, self._state_changed)
        self.limits: GeneratorLimits = GeneratorLimits()
        self.tables = GeneratorTables.for_limits(self.limits)
        self.technique = Technique()
        self.fault: ResultCode | None = None
        self.last_record: ExposureRecord | None = None
        self._connected = False
        self._lock = threading.RLock()
        #: set by Abort before it asks the backend, cleared when a prepare/exposure starts
        self._abort_requested = threading.Event()

    # --- status ------------------------------------------------------------------------------
    @property
    def state(self) -> GeneratorState:
        return self.fsm.state  # type: ignore[return-value]

    @property
    def ready(self) -> bool:
        return self.state in (S.Standby, S.Ready)

    # --- technique rules -------------------------------------------------------------------------
    def ma_ceiling(self, kv: float, focus: int) -> float:
        """The highest mA table entry allowed at ``kv`` on ``focus`` (power and focus)."""
        lim = self.limits
        raw = min(lim.ma_max, lim.focus_ma_max[focus], lim.max_power_kw * 1000.0 / kv)
        top = self.tables.ma.floor(raw)
        return top if top is not None else self.tables.ma.lo

    def _derive(self, t: Technique) -> Technique:
        if t.mode == 0:
            return dataclasses.replace(t, mas=_sig(t.ma * t.ms / 1000.0))
        return dataclasses.replace(t, ms=_sig(t.mas * 1000.0 / t.ma))

    def feasible(self, t: Technique) -> bool:
        """True when ``t`` (already derived) respects every limit and coupling."""
        lim, eps = self.limits, 1e-9
        if not (lim.kv_min - eps <= t.kv <= lim.kv_max + eps):
            return False
        if not (lim.ma_min - eps <= t.ma <= self.ma_ceiling(t.kv, t.focus) + eps):
            return False
        if not (lim.ms_min * (1 - 1e-6) <= t.ms <= lim.ms_max * (1 + 1e-6)):
            return False
        return lim.mas_min * (1 - 1e-6) <= t.mas <= lim.mas_max * (1 + 1e-6)

    def _fit(self, t: Technique, field: str, requested: float) -> Technique:
        """Put ``field`` on the feasible table entry nearest to ``requested``.

        The entries are tried outward from ``requested`` in order of distance (a tie goes
        to the lower entry), so the first feasible one is the answer and the whole table
        is checked only when nothing fits.
        """
        table: ValueTable = self.tables.table(field)
        values, dist = table.values, table._distance
        up = bisect.bisect_left(values, requested)  # first entry >= requested
        down = up - 1
        while down >= 0 or up < len(values):
            if up >= len(values):
                take_down = True
            elif down < 0:
                take_down = False
            else:
                take_down = (dist(values[down], requested), values[down]) <= (
                    dist(values[up], requested), values[up])
            if take_down:
                value, down = values[down], down - 1
            else:
                value, up = values[up], up + 1
            candidate = self._derive(dataclasses.replace(t, **{field: value}))
            if self.feasible(candidate):
                return candidate
        raise DiosError(OUT_OF_RANGE, f"no {table.name} value is possible with this technique",
                        technique=technique_dict(t))

    def _lower_ma(self, t: Technique) -> Technique:
        """Bring mA under the ceiling after a kV/focus change, preserving mAs where possible."""
        ceiling = self.ma_ceiling(t.kv, t.focus)
        if t.ma <= ceiling + 1e-9:
            return self._fit(t, "mas" if t.mode else "ms", t.mas if t.mode else t.ms)
        old_mas = t.mas
        t = dataclasses.replace(t, ma=ceiling)
        if t.mode == 0:
            want = self.tables.ms.ceil(old_mas * 1000.0 / ceiling) or self.tables.ms.hi
            return self._fit(t, "ms", want)
        return self._fit(t, "mas", old_mas)

    def solve(self, t: Technique, param: str, requested: float | int | str) -> Technique:
        """The technique after setting ``param`` to ``requested`` under the rules above."""
        if param == "KV":
            return self._lower_ma(dataclasses.replace(t, kv=self.tables.kv.nearest(float(requested))))
        if param == "Focus":
            return self._lower_ma(dataclasses.replace(t, focus=int(requested)))
        if param == "Technique":
            t = dataclasses.replace(t, mode=int(requested))
            return self._fit(t, "mas", t.mas) if t.mode else self._fit(t, "ms", t.ms)
        if param == "AECField":
            return dataclasses.replace(t, aec_field=str(requested))
        if param == "AECDensity":
            return dataclasses.replace(t, aec_density=int(requested))
        value = float(requested)
        if param == "MA":
            return self._fit(t, "ma", value)
        if param == "MS":
            if t.mode == 0:
                return self._fit(t, "ms", value)
            return self._fit(t, "mas", t.ma * value / 1000.0)
        if param == "MAS":
            if t.mode == 0:
                return self._fit(t, "ms", value * 1000.0 / t.ma)
            return self._fit(t, "mas", value)
        raise DiosError(BAD_PARAMETER, f"unknown parameter {param!r}")

    def _param_value(self, t: Technique, param: str) -> str:
        if param in _NUMERIC:
            return fmt(getattr(t, _NUMERIC[param]))
        return {"Focus": str(t.focus), "AECField": t.aec_field, "AECDensity": str(t.aec_density),
                "Technique": str(t.mode)}[param]

    # --- parsing -----------------------------------------------------------------------------
    def _parse_set(self, param: str, text: str) -> float | int | str:
        """Parse and range-check a SetParam value (BAD_PARAMETER / OUT_OF_RANGE)."""
        if not isinstance(text, str) or not text.strip():
            raise DiosError(BAD_PARAMETER, f"{param}: a value is required")
        if param in _NUMERIC:
            value = parse_float(text, param)
            lo, hi = {"KV": (self.limits.kv_min, self.limits.kv_max),
                      "MA": (self.limits.ma_min, self.limits.ma_max),
                      "MS": (self.limits.ms_min, self.limits.ms_max),
                      "MAS": (self.limits.mas_min, self.limits.mas_max)}[param]
            if not (lo - 1e-9 <= value <= hi + 1e-9):
                raise DiosError(OUT_OF_RANGE, f"{param} {text.strip()} outside {fmt(lo)}..{fmt(hi)}",
                                min=lo, max=hi)
            return value
        if param == "Focus":
            return parse_choice(text, "Focus", _FOCUS)
        if param == "Technique":
            return parse_choice(text, "Technique", _MODES)
        if param == "AECDensity":
            value = parse_int(text, "AECDensity")
            if not AEC_DENSITY[0] <= value <= AEC_DENSITY[1]:
                raise DiosError(OUT_OF_RANGE, f"AECDensity {value} outside -5..5", min=-5, max=5)
            return value
        if param == "AECField":
            field = text.strip()
            if len(field) != 3 or set(field) - {"0", "1"}:
                raise DiosError(BAD_PARAMETER,
                                f"AECField {text!r}: three characters 0/1 for left, centre, right")
            if field == "000":
                raise DiosError(OUT_OF_RANGE, "AECField: at least one chamber must be selected")
            return field
        raise DiosError(BAD_PARAMETER, f"unknown parameter {param!r}")  # pragma: no cover

    def _stepped(self, t: Technique, param: str, n: int) -> float | int | str:
        """The value ``n`` steps (signed) along ``param``'s own table from the current one."""
        if param in _NUMERIC:
            return self.tables.table(_NUMERIC[param]).step(getattr(t, _NUMERIC[param]), n)
        if param == "Focus":
            return min(max(t.focus + n, 0), 1)
        if param == "Technique":
            return min(max(t.mode + n, 0), 2)
        if param == "AECDensity":
            return min(max(t.aec_density + n, AEC_DENSITY[0]), AEC_DENSITY[1])
        i = AEC_FIELDS.index(t.aec_field) if t.aec_field in AEC_FIELDS else 1
        return AEC_FIELDS[min(max(i + n, 0), len(AEC_FIELDS) - 1)]

    # --- backend calls and faults ------------------------------------------------------------
    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call the backend; a latched fault moves the device to Error before re-raising."""
        try:
            return fn(*args)
        except DiosError as err:
            if err.code in LATCHED:
                self._raise_fault(err)
            raise

    def _raise_fault(self, err: DiosError) -> None:
        latched = err.code in LATCHED
        if latched:
            self.fault = err.code
        self.publish(EventKind.FAULT, err.code.name, err.code.hex, code=err.code.hex,
                     description=err.description(), latched=latched)
        if latched:
            self.fsm.fire_if("fault")

    def on_job_crash(self, name: str) -> None:
        self._raise_fault(DiosError(INTERNAL, f"{name} job crashed"))

    def _job_failed(self, err: DiosError, cancel: threading.Event) -> None:
        if (cancel.is_set() or self._abort_requested.is_set()) and err.code not in LATCHED:
            return  # Abort moves the state
        # an ABORTED nobody here asked for (the generator's own abort) is a refusal
        self._raise_fault(err)
        if err.code not in LATCHED:
            self.fsm.fire_if("refused")

    def _join_finished_job(self) -> None:
        """Wait for a job that has done its last transition but not yet returned."""
        job = self._job
        if job is not None and job is not threading.current_thread():
            job.join(5.0)

    # --- lifecycle ---------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect the backend, load its limits and send the initial technique."""
        self.fsm.require("connect")
        try:
            self._open_backend()
        except DiosError as err:
            self._raise_fault(err if err.code in LATCHED else DiosError(DEVICE_FAULT, err.detail))
            raise
        self.fsm.fire("connect")

    def _open_backend(self) -> None:
        if not self._connected:
            self.backend.connect()
            self._connected = True
        limits = self.backend.limits()
        if limits != self.limits:
            self.limits = limits
            self.tables = GeneratorTables.for_limits(limits)
        t = self.technique
        fitted = self._lower_ma(dataclasses.replace(
            t, kv=self.tables.kv.nearest(t.kv), ma=self.tables.ma.nearest(t.ma),
            ms=self.tables.ms.nearest(t.ms), mas=self.tables.mas.nearest(t.mas)))
        self._commit(self.backend.apply(fitted))

    def _commit(self, t: Technique) -> list[str]:
        """Store ``t`` and publish a PARAM event per changed value."""
        with self._lock:
            old, self.technique = self.technique, t
        changed = []
        for f in dataclasses.fields(Technique):
            if getattr(old, f.name) != getattr(t, f.name):
                param = _PARAM_OF_FIELD[f.name]
                changed.append(param)
                self.publish(EventKind.PARAM, param, self._param_value(t, param))
        return changed

    def close(self) -> None:
        self.cancel_job()
        if self._connected:
            try:
                self.backend.close()
            finally:
                self._connected = False

    # --- commands: parameters ----------------------------------------------------------------
    def _set(self, param: str, new: Technique, requested: str) -> tuple[str, dict]:
        accepted = self._call(self.backend.apply, new)
        changed = self._commit(accepted)
        value = self._param_value(accepted, param)
        return value, {"requested": requested, "changed": changed,
                       "technique": technique_dict(accepted)}

    def _do_set(self, param: str, text: str) -> tuple[str, dict]:
        self.fsm.require("set")
        value = self._parse_set(param, text)
        return self._set(param, self.solve(self.technique, param, value), text)

    def _do_step(self, param: str, text: str, sign: int) -> tuple[str, dict]:
        self.fsm.require("set")
        n = 1
        if isinstance(text, str) and text.strip():
            n = parse_int(text, "step count")
            if not 1 <= n <= MAX_STEPS:
                raise DiosError(OUT_OF_RANGE, f"step count {n} outside 1..{MAX_STEPS}")
        target = self._stepped(self.technique, param, sign * n)
        return self._set(param, self.solve(self.technique, param, target), text)

    def _get(self, param: str) -> tuple[str, dict]:
        t = self.technique
        data: dict[str, Any] = {"technique": technique_dict(t)}
        if param == "Focus":
            data["name"] = ("SMALL", "LARGE")[t.focus]
        if param == "Technique":
            data["name"] = _MODE_NAMES[t.mode]
        return self._param_value(t, param), data

    @command("GetParam_KV", query=True)
    def get_kv(self, p: str) -> tuple[str, dict]:
        return self._get("KV")

    @command("SetParam_KV", param="float")
    def set_kv(self, p: str) -> tuple[str, dict]:
        return self._do_set("KV", p)

    @command("IncParam_KV", param="int")
    def inc_kv(self, p: str) -> tuple[str, dict]:
        return self._do_step("KV", p, +1)

    @command("DecParam_KV", param="int")
    def dec_kv(self, p: str) -> tuple[str, dict]:
        return self._do_step("KV", p, -1)

    @command("GetParam_MA", query=True)
    def get_ma(self, p: str) -> tuple[str, dict]:
        return self._get("MA")

    @command("SetParam_MA", param="float")
    def set_ma(self, p: str) -> tuple[str, dict]:
        return self._do_set("MA", p)

    @command("IncParam_MA", param="int")
    def inc_ma(self, p: str) -> tuple[str, dict]:
        return self._do_step("MA", p, +1)

    @command("DecParam_MA", param="int")
    def dec_ma(self, p: str) -> tuple[str, dict]:
        return self._do_step("MA", p, -1)

    @command("GetParam_MS", query=True)
    def get_ms(self, p: str) -> tuple[str, dict]:
        return self._get("MS")

    @command("SetParam_MS", param="float")
    def set_ms(self, p: str) -> tuple[str, dict]:
        return self._do_set("MS", p)

    @command("IncParam_MS", param="int")
    def inc_ms(self, p: str) -> tuple[str, dict]:
        return self._do_step("MS", p, +1)

    @command("DecParam_MS", param="int")
    def dec_ms(self, p: str) -> tuple[str, dict]:
        return self._do_step("MS", p, -1)

    @command("GetParam_MAS", query=True)
    def get_mas(self, p: str) -> tuple[str, dict]:
        return self._get("MAS")

    @command("SetParam_MAS", param="float")
    def set_mas(self, p: str) -> tuple[str, dict]:
        return self._do_set("MAS", p)

    @command("IncParam_MAS", param="int")
    def inc_mas(self, p: str) -> tuple[str, dict]:
        return self._do_step("MAS", p, +1)

    @command("DecParam_MAS", param="int")
    def dec_mas(self, p: str) -> tuple[str, dict]:
        return self._do_step("MAS", p, -1)

    @command("GetParam_Focus", query=True)
    def get_focus(self, p: str) -> tuple[str, dict]:
        return self._get("Focus")

    @command("SetParam_Focus", param="0|1|SMALL|LARGE")
    def set_focus(self, p: str) -> tuple[str, dict]:
        return self._do_set("Focus", p)

    @command("IncParam_Focus", param="int")
    def inc_focus(self, p: str) -> tuple[str, dict]:
        return self._do_step("Focus", p, +1)

    @command("DecParam_Focus", param="int")
    def dec_focus(self, p: str) -> tuple[str, dict]:
        return self._do_step("Focus", p, -1)

    @command("GetParam_AECField", query=True)
    def get_aec_field(self, p: str) -> tuple[str, dict]:
        return self._get("AECField")

    @command("SetParam_AECField", param="bits LCR, e.g. 010")
    def set_aec_field(self, p: str) -> tuple[str, dict]:
        return self._do_set("AECField", p)

    @command("IncParam_AECField", param="int")
    def inc_aec_field(self, p: str) -> tuple[str, dict]:
        return self._do_step("AECField", p, +1)

    @command("DecParam_AECField", param="int")
    def dec_aec_field(self, p: str) -> tuple[str, dict]:
        return self._do_step("AECField", p, -1)

    @command("GetParam_AECDensity", query=True)
    def get_aec_density(self, p: str) -> tuple[str, dict]:
        return self._get("AECDensity")

    @command("SetParam_AECDensity", param="int -5..5")
    def set_aec_density(self, p: str) -> tuple[str, dict]:
        return self._do_set("AECDensity", p)

    @command("IncParam_AECDensity", param="int")
    def inc_aec_density(self, p: str) -> tuple[str, dict]:
        return self._do_step("AECDensity", p, +1)

    @command("DecParam_AECDensity", param="int")
    def dec_aec_density(self, p: str) -> tuple[str, dict]:
        return self._do_step("AECDensity", p, -1)

    @command("GetParam_Technique", query=True)
    def get_technique(self, p: str) -> tuple[str, dict]:
        return self._get("Technique")

    @command("SetParam_Technique", param="0 mA/ms|1 mAs|2 AEC")
    def set_technique(self, p: str) -> tuple[str, dict]:
        return self._do_set("Technique", p)

    @command("IncParam_Technique", param="int")
    def inc_technique(self, p: str) -> tuple[str, dict]:
        return self._do_step("Technique", p, +1)

    @command("DecParam_Technique", param="int")
    def dec_technique(self, p: str) -> tuple[str, dict]:
        return self._do_step("Technique", p, -1)

    # --- commands: lifecycle and exposure --------------------------------------------------------
    @command("Initialize")
    def initialize(self, p: str) -> str:
        self.connect()
        return self.status_string

    @command("GetStatus")
    def get_status(self, p: str) -> tuple[str, dict]:
        data: dict[str, Any] = {
            "state": self.state.name,
            "technique": technique_dict(self.technique),
            "technique_name": _MODE_NAMES[self.technique.mode],
            "fault": self.fault.hex if self.fault else "",
            "fault_name": self.fault.name if self.fault else "",
            "backend": getattr(self.backend, "name", type(self.backend).__name__),
            "ready": self.ready,
        }
        if self._connected:
            try:
                rb: GeneratorReadback = self._call(self.backend.readback)
            except DiosError as err:
                data["readback_error"] = err.code.hex
            else:
                data.update(heat_percent=round(rb.heat_percent, 2), heat_hu=round(rb.heat_hu, 1),
                            interlock_closed=rb.interlock_closed, generator_fault=rb.fault)
        data["state"] = self.state.name
        return self.status_string, data

    @command("GetLimits", query=True)
    def get_limits(self, p: str) -> tuple[str, dict]:
        lim = dataclasses.asdict(self.limits)
        lim["focus_ma_max"] = list(self.limits.focus_ma_max)
        tables = {"KV": list(self.tables.kv.values), "MA": list(self.tables.ma.values),
                  "MS": list(self.tables.ms.values), "MAS": list(self.tables.mas.values)}
        return (f"kV {fmt(self.limits.kv_min)}-{fmt(self.limits.kv_max)}, "
                f"mA {fmt(self.limits.ma_min)}-{fmt(self.limits.ma_max)}, "
                f"{fmt(self.limits.max_power_kw)} kW"), {"limits": lim, "tables": tables}

    @command("Prepare")
    def prepare(self, p: str) -> str:
        self.fsm.require("prepare")
        self._join_finished_job()
        rb = self._call(self.backend.readback)
        if not rb.interlock_closed:
            err = DiosError(INTERLOCK_OPEN, "prepare refused")
            self._raise_fault(err)
            raise err
        if rb.heat_percent >= 100.0 or rb.fault == TUBE_OVERHEAT.name:
            err = DiosError(TUBE_OVERHEAT, f"anode heat {rb.heat_percent:.0f} %",
                            heat_percent=round(rb.heat_percent, 2))
            self._raise_fault(err)
            raise err
        self._abort_requested.clear()
        self.fsm.fire("prepare")
        self.start_job("prepare", self._prepare_job)
        return self.status_string

    def _prepare_job(self, cancel: threading.Event) -> None:
        try:
            self.backend.prepare(cancel)
        except DiosError as err:
            self._job_failed(err, cancel)
            return
        if not cancel.is_set():
            self.fsm.fire_if("prepared")

    @command("Expose")
    def expose(self, p: str) -> str:
        self.fsm.require("expose")
        self._join_finished_job()
        line = self.xray_enable
        if line is not None:
            line.beam_on()  # WRONG_STATE, nothing changed, unless the panel is armed
        try:
            self._abort_requested.clear()
            self._beam_stopped = ""
            self.fsm.fire("expose")
            self.start_job("expose", self._expose_job)
        except BaseException:
            if line is not None:
                line.beam_off()
            raise
        return self.status_string

    def _stop_beam(self, reason: str) -> None:
        """The X-ray enable line dropped during the beam: stop it now (any thread)."""
        self._beam_stopped = reason or "the detector dropped out"
        self._cancel.set()
        try:
            self.backend.abort()
        except DiosError as err:
            log.error("could not stop the beam: %s", err)

    def _expose_job(self, cancel: threading.Event) -> None:
        try:
            try:
                record = self.backend.expose(cancel)
            finally:
                if self.xray_enable is not None:
                    self.xray_enable.beam_off()
        except DiosError as err:
            partial = err.data.get("record")
            if err.code is ABORTED and isinstance(partial, dict):
                self.publish(EventKind.EXPOSURE, "exposure", "aborted", record=partial, aborted=True)
            if self._beam_stopped and err.code not in LATCHED:
                self._interlock_stopped(partial)
                return
            self._job_failed(err, cancel)
            return
        self.last_record = record
        self.publish(EventKind.EXPOSURE, "exposure",
                     f"{fmt(record.kv)} kV {fmt(record.mas)} mAs",
                     record=dataclasses.asdict(record))
        self.fsm.fire_if("done")

    def _interlock_stopped(self, partial: object) -> None:
        """The beam was stopped by the X-ray enable line: an aborted exposure, Standby."""
        if not isinstance(partial, dict):
            self.publish(EventKind.EXPOSURE, "exposure", "aborted", aborted=True,
                         record=None, reason=self._beam_stopped)
        self.publish(EventKind.FAULT, ABORTED.name, ABORTED.hex, code=ABORTED.hex,
                     description=f"beam stopped: X-ray enable dropped ({self._beam_stopped})",
                     latched=False)
        self.fsm.fire_if("abort")

    @command("Abort")
    def abort(self, p: str) -> str:
        self.fsm.require("abort")
        self._abort_requested.set()  # the generator's ABORTED report is expected from now
        try:
            self._call(self.backend.abort)
        except DiosError as err:
            if err.code in LATCHED:  # Error already entered: the job has nothing left to do
                self._cancel.set()
                self.cancel_job()
            else:  # refused: the prepare/exposure goes on and the state stays
                self._abort_requested.clear()
            raise
        self._cancel.set()
        self.fsm.fire_if("abort")
        self.cancel_job()
        return self.status_string

    @command("ResetError")
    def reset_error(self, p: str) -> str:
        self.fsm.require("reset")
        code = self.fault
        try:
            if not self._connected:
                self.backend.connect()
                self._connected = True
            self.backend.reset()
            self._open_backend()
        except DiosError as err:
            raise DiosError(err.code, err.detail, fault=(code or err.code).hex) from None
        self.fault = None
        self.fsm.fire("reset")
        return self.status_string

