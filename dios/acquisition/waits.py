"""Waiting for device states and events with deadlines, never fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from dios.codes import TIMEOUT, WRONG_STATE, DiosError, ResultCode
from dios.events import EventHub, Subscription
from dios.messages import Event, EventKind


class Watcher:
    """Collects events of interest from the moment it is made, so nothing is missed
    between sending a command and waiting for its effect."""

    def __init__(self, hub: EventHub, pattern: str = "DIOS/DEVICE/*",
                 kinds: Iterable[str] | None = None) -> None:
        self.sub: Subscription = hub.subscribe(pattern, kinds=kinds)
        self.seen: list[Event] = []

    def wait(self, predicate: Callable[[Event], bool], timeout: float, what: str,
             fail_on_fault: bool = True) -> Event:
        """Return the first event (already seen or new) matching ``predicate``.

        Raises the fault's own code when a FAULT event arrives first, TIMEOUT after
        ``timeout`` seconds.
        """
        for ev in self.seen:
            if predicate(ev):
                return ev
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DiosError(TIMEOUT, f"waiting for {what}")
            ev = self.sub.get(timeout=min(left, 0.5))
            if ev is None:
                continue
            self.seen.append(ev)
            if predicate(ev):
                return ev
            if fail_on_fault and ev.kind == EventKind.FAULT:
                code = ev.data.get("code", "")
                try:
                    rc = ResultCode.from_hex(code)
                except (KeyError, ValueError):
                    rc = None
                if rc is not None:
                    raise DiosError(rc, f"{ev.deviceUri}: {ev.data.get('description', '')}")

    def close(self) -> None:
        self.sub.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_status(read: Callable[[], str], wanted: str | tuple[str, ...], timeout: float,
                what: str, interval: float = 0.002, fail_on: tuple[str, ...] = ()) -> str:
    """Poll ``read()`` until it returns one of ``wanted``; TIMEOUT otherwise.

    A status in ``fail_on`` ends the wait at once with ``WRONG_STATE`` (the device went
    somewhere from which ``wanted`` will not come, e.g. another client aborted it).
    """
    wanted_t = (wanted,) if isinstance(wanted, str) else wanted
    deadline = time.monotonic() + timeout
    while True:
        status = read()
        if status in wanted_t:
            return status
        if status in fail_on:
            raise DiosError(WRONG_STATE, f"{what}: the device went to {status}")
        if time.monotonic() > deadline:
            raise DiosError(TIMEOUT, f"{what}: still {status}, wanted {'/'.join(wanted_t)}")
        time.sleep(interval)
