"""The device base: a command table, one background job at a time, and events.

A subclass declares its commands with :func:`command`::

    class Lamp(Device):
        @command("SetParam_Power")
        def set_power(self, param: str) -> str:
            ...
            return accepted_value

Handlers run on the bus's per-device worker, one at a time and in arrival order, and
must return quickly: anything that takes device time (prepare, exposure, calibration)
runs as a *job* started with :meth:`Device.start_job`, which replies at once and reports
completion through events. Events published while handling a request, or by a job the
request started, carry that request's transaction and client ids.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import threading
from collections.abc import Callable
from enum import Enum
from typing import Any

from dios.clock import REAL_TIME, SimClock
from dios.codes import BAD_PARAMETER, BUSY, UNKNOWN_COMMAND, DiosError
from dios.events import EventHub
from dios.messages import Event, EventKind, Request

log = logging.getLogger(__name__)

#: The request being served (or that started the running job), for event attribution.
current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "current_request", default=None
)

Handler = Callable[..., Any]


def command(name: str, *, param: str = "none", query: bool = False) -> Callable[[Handler], Handler]:
    """Mark a method as the handler of ``reqName == name``.

    ``param`` documents what ``reqParam`` holds (``none``, ``float``, ``int``, ``str``, ...)
    and is listed by the device's ``GetCommands``. ``query``: the handler only reads the
    device's own state (never its link, never a wait, never a change), so the bus may run
    it on the caller's thread when the device is idle (see :meth:`DeviceBus.submit`).
    """

    def mark(fn: Handler) -> Handler:
        fn.__dios_command__ = name  # type: ignore[attr-defined]
        fn.__dios_param__ = param  # type: ignore[attr-defined]
        fn.__dios_query__ = query  # type: ignore[attr-defined]
        return fn

    return mark


class Device:
    """Base class of every device on the bus."""

    #: seed status-string prefix, e.g. ``GENERATOR_STATUS_``
    status_prefix = "DEVICE_STATUS_"

    def __init__(self, uri: str, hub: EventHub, clock: SimClock = REAL_TIME) -> None:
        self.uri = uri
        self.hub = hub
        self.clock = clock
        self.commands: dict[str, Handler] = {}
        #: commands that only read the device's state (``command(query=True)``)
        self.queries: set[str] = set()
        for klass in reversed(type(self).__mro__):
            for attr in vars(klass).values():
                name = getattr(attr, "__dios_command__", None)
                if name:
                    self.commands[name] = getattr(self, attr.__name__)
                    if getattr(attr, "__dios_query__", False):
                        self.queries.add(name)
                    else:
                        self.queries.discard(name)
        self._job: threading.Thread | None = None
        self._job_name = ""
        self._cancel = threading.Event()
        self._job_lock = threading.Lock()

    # --- requests ------------------------------------------------------------------------
    def handle(self, req: Request) -> tuple[str, dict[str, Any]]:
        """Run the handler of ``req``; return (result string, data) or raise DiosError."""
        handler = self.commands.get(req.reqName)
        if handler is None:
            raise DiosError(UNKNOWN_COMMAND, f"{req.reqName!r} on {self.uri}")
        token = current_request.set(req)
        try:
            out = handler(req.reqParam)
        finally:
            current_request.reset(token)
        if out is None:
            return "", {}
        if isinstance(out, tuple):
            return str(out[0]), dict(out[1])
        if isinstance(out, dict):
            return "", out
        return str(out), {}

    @command("GetCommands", query=True)
    def get_commands(self, param: str) -> tuple[str, dict]:
        cmds = {n: getattr(h, "__dios_param__", "none") for n, h in sorted(self.commands.items())}
        return ",".join(cmds), {"commands": cmds}

    # --- status ----------------------------------------------------------------------------
    @property
    def state(self) -> Enum:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def status_string(self) -> str:
        """The status string clients see, e.g. ``GENERATOR_STATUS_STANDBY``."""
        return self.status_prefix + str(self.state.value)

    @property
    def ready(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    # --- events ----------------------------------------------------------------------------
    def publish(self, kind: str, name: str, value: object = "", **data: Any) -> None:
        req = current_request.get()
        text = f"{value:g}" if isinstance(value, float) else str(value)
        self.hub.publish(Event(
            self.uri, kind, name, text, data,
            req.reqTransaction if req else "", req.reqClientID if req else "",
        ))

    def _state_changed(self, old: Enum, new: Enum, event: str) -> None:
        self.publish(EventKind.STATE, "status", self.status_prefix + str(new.value),
                     previous=self.status_prefix + str(old.value), trigger=event)

    # --- jobs --------------------------------------------------------------------------------
    @property
    def job_running(self) -> bool:
        return self._job is not None and self._job.is_alive()

    def start_job(self, name: str, fn: Callable[[threading.Event], None]) -> None:
        """Run ``fn(cancel_event)`` in the background; BUSY if a job is already running."""
        with self._job_lock:
            if self.job_running:
                raise DiosError(BUSY, f"{self._job_name} running on {self.uri}")
            self._cancel = threading.Event()
            ctx = contextvars.copy_context()
            cancel = self._cancel

            def run() -> None:
                try:
                    ctx.run(fn, cancel)
                except Exception:  # noqa: BLE001 - a job's crash becomes a device fault
                    log.exception("job %s on %s crashed", name, self.uri)
                    ctx.run(self.on_job_crash, name)

            self._job_name = name
            self._job = threading.Thread(target=run, name=f"dios-job-{name}", daemon=True)
            self._job.start()

    def cancel_job(self, wait: float = 5.0) -> bool:
        """Ask the running job to stop and wait for it; True if none is left running."""
        self._cancel.set()
        job = self._job
        if job is not None and job is not threading.current_thread():
            job.join(wait)
        return not self.job_running

    def on_job_crash(self, name: str) -> None:
        """Called (in the job's context) when a job raised; subclasses enter their fault state."""

    def close(self) -> None:
        self.cancel_job()


# --- parameter parsing helpers -----------------------------------------------------------
#: An integer ``reqParam``: ASCII digits with an optional sign, nothing else.
_INT_RE = re.compile(r"[+-]?[0-9]+")
#: A decimal ``reqParam``: ASCII digits, optional sign, point and exponent.
_FLOAT_RE = re.compile(r"[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?")


def parse_float(param: str, what: str) -> float:
    """Parse a numeric ``reqParam``; BAD_PARAMETER if it is not a finite number.

    Only ASCII decimal notation is accepted (``70``, ``-1.5``, ``.5``, ``2e3``); other
    digit sets, ``_`` separators, ``inf`` and ``nan`` are refused.
    """
    text = param.strip() if isinstance(param, str) else ""
    if not _FLOAT_RE.fullmatch(text):
        raise DiosError(BAD_PARAMETER, f"{what}: {param!r} is not a number")
    value = float(text)
    if not math.isfinite(value):
        raise DiosError(BAD_PARAMETER, f"{what}: {param!r} is not a finite number")
    return value


def parse_int(param: str, what: str) -> int:
    """Parse an integer ``reqParam`` (ASCII digits, optional sign); BAD_PARAMETER otherwise."""
    text = param.strip() if isinstance(param, str) else ""
    if not _INT_RE.fullmatch(text):
        raise DiosError(BAD_PARAMETER, f"{what}: {param!r} is not an integer")
    try:
        return int(text)
    except ValueError:  # more digits than the interpreter converts
        raise DiosError(BAD_PARAMETER, f"{what}: {param[:20]!r}... is too long") from None


def parse_choice(param: str, what: str, choices: dict[str, Any]) -> Any:
    """Map ``reqParam`` onto one of ``choices`` (case-insensitive); BAD_PARAMETER otherwise."""
    key = param.strip().upper() if isinstance(param, str) else ""
    table = {k.upper(): v for k, v in choices.items()}
    if key not in table:
        raise DiosError(BAD_PARAMETER, f"{what}: {param!r} not one of {', '.join(choices)}")
    return table[key]
