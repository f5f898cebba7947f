"""Request ids: a retried request gets the first one's outcome instead of running twice.

A client that lost a reply (its connection dropped during ``task.expose``) retries with the
same request id - ``meta.requestId`` over MessagePack-RPC, the ``Request-Id`` header over
HTTP - and gets the outcome of the first call, also while that one is still running, for
``retention`` seconds. The key is the user, the operation and the id, so one user's ids
never meet another's. The first call runs as a task of its own: when the connection that
started it drops, it still finishes and its outcome is kept. A call that failed with an
unexpected error, or whose outcome ``keep`` refuses (a file download: reading twice is
harmless and files are large), is forgotten so that the retry runs again.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from dios.codes import INVALID_FIELD, DiosError

T = TypeVar("T")

#: The longest request id accepted.
MAX_REQUEST_ID = 128


def check_request_id(value: Any, field: str = "requestId") -> str:
    """A request id: a string of 1 to 128 characters; INVALID_FIELD otherwise."""
    if not isinstance(value, str) or not value or len(value) > MAX_REQUEST_ID:
        raise DiosError(INVALID_FIELD, f"{field} must be a string of 1 to {MAX_REQUEST_ID} "
                        "characters", field=field)
    return value


class Once:
    """Outcomes by request key, each computed once (see the module docstring).

    Parameters
    ----------
    retention : float
        Seconds an outcome is kept after its call began.
    max_entries : int
        Outcomes kept at most (the oldest finished ones go first).
    keep : callable, optional
        ``keep(outcome) -> bool``: whether an outcome may be handed to a retry.
    """

    def __init__(self, retention: float = 300.0, max_entries: int = 4096,
                 keep: Callable[[Any], bool] | None = None) -> None:
        self.retention = retention
        self.max_entries = max_entries
        self.keep = keep or (lambda outcome: True)
        self._entries: collections.OrderedDict[Hashable, tuple[float, asyncio.Task]] = (
            collections.OrderedDict())

    def __len__(self) -> int:
        return len(self._entries)

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """The outcome of ``call()`` for ``key``: computed now, or the first call's."""
        now = time.monotonic()
        entries = self._entries
        while entries:
            began, oldest = next(iter(entries.values()))
            fresh = now - began <= self.retention and len(entries) < self.max_entries
            if fresh or not oldest.done():
                break
            entries.popitem(last=False)
        entry = entries.get(key)
        if entry is None:
            task = asyncio.get_running_loop().create_task(call())  # type: ignore[arg-type]
            entries[key] = entry = (now, task)

            def done(t: asyncio.Task, key: Hashable = key) -> None:
                if t.cancelled() or t.exception() is not None or not self.keep(t.result()):
                    if entries.get(key, (0, None))[1] is t:
                        del entries[key]

            task.add_done_callback(done)
        return await asyncio.shield(entry[1])
