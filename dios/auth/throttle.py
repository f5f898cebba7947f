"""Login throttling and the bound on concurrent password hashing.

:class:`LoginThrottle` counts failed logins per source address and per user name in
sliding windows and refuses further attempts for a while once a threshold is crossed:

* **per address** (``address_threshold`` failures within ``window`` seconds, whatever
  the user names tried): the address is refused for ``address_lock`` seconds, doubled
  at every further lockout, at most ``address_lock_max`` (15 min by default). Once over
  the threshold, every further failure locks the address again for the next, longer
  period, so a locked-out guesser gets one guess per lock period;
* **per user** (``user_threshold`` failures within ``window`` from any addresses): the
  user name is refused for a short delay (``user_lock``, doubled, at most
  ``user_lock_max``, 30 s by default) so that an attacker with many addresses cannot keep
  the user (the admin) out for long. Addresses from which the user logged in
  successfully (its *trusted addresses*, up to ``trusted_per_user`` per user, for
  ``trust_ttl`` seconds) are never held by the user lock, only by their own address lock;
  a locked address therefore never affects the user's logins from other addresses beyond
  that cap, and not at all from its trusted addresses.

A refused attempt raises ``TOO_MANY_ATTEMPTS`` (``retry_after`` in whole seconds, also in
the description) before the password is looked at: it costs no hash and says nothing
about whether the password was right; refused attempts are not counted as failures. A
success resets the counters of its address and its user. An empty source address (an
in-process caller that has none) is throttled per user only.

The state lives in memory (lost at restart), in tables bounded by ``max_entries`` per
kind (the least recently touched entries are forgotten first; entries without recent
failures or locks are dropped as they age).

:class:`HashLimiter` bounds the password hashes (scrypt, 32 MiB and about 0.1 s each)
that run at once: at most ``concurrency`` run, at most ``queue`` callers wait, each for
at most ``wait`` seconds; any other caller gets ``LIMIT_REACHED`` at once, so the memory
a login flood can take is bounded.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from dios.codes import LIMIT_REACHED, TOO_MANY_ATTEMPTS, DiosError

log = logging.getLogger("dios.auth")

__all__ = ["HashLimiter", "LoginThrottle"]

T = TypeVar("T")

_MAX_SOURCE = 128


@dataclass
class _Counter:
    """Failures of one address or one user name, and its lock."""

    failures: deque[float]
    locked_until: float = 0.0
    lockouts: int = 0
    last: float = 0.0
    trusted: OrderedDict[str, float] = field(default_factory=OrderedDict)


class LoginThrottle:
    """Failed-login counters per address and per user, with lockouts.

    Parameters
    ----------
    address_threshold : int
        Failures from one address within ``window`` that lock the address (default 10).
    address_lock, address_lock_max : float
        First lock of an address in seconds (default 30), doubled at each further
        lockout up to ``address_lock_max`` (default 900).
    user_threshold : int
        Failures for one user name within ``window``, from any addresses, that lock the
        user name for untrusted addresses (default 20).
    user_lock, user_lock_max : float
        First lock of a user name (default 5 s), doubled up to ``user_lock_max``
        (default 30 s): the longest any address outside the user's trusted ones waits.
    window : float
        The sliding window of the failure counts in seconds (default 900).
    trust_ttl : float
        How long an address stays trusted for a user after a successful login (default
        30 days).
    trusted_per_user : int
        Trusted addresses kept per user (default 16, the most recent ones).
    max_entries : int
        Addresses and user names tracked at most, each (default 10,000).
    clock : callable
        Monotonic seconds (``time.monotonic``); injectable for tests.
    """

    def __init__(self, *, address_threshold: int = 10, address_lock: float = 30.0,
                 address_lock_max: float = 900.0, user_threshold: int = 20,
                 user_lock: float = 5.0, user_lock_max: float = 30.0, window: float = 900.0,
                 trust_ttl: float = 30 * 86400.0, trusted_per_user: int = 16,
                 max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if address_threshold < 1 or user_threshold < 1 or max_entries < 1:
            raise ValueError("thresholds and max_entries must be at least 1")
        if min(address_lock, address_lock_max, user_lock, user_lock_max, window) <= 0:
            raise ValueError("lock times and the window must be positive")
        self.address_threshold = int(address_threshold)
        self.address_lock = float(address_lock)
        self.address_lock_max = max(float(address_lock_max), self.address_lock)
        self.user_threshold = int(user_threshold)
        self.user_lock = float(user_lock)
        self.user_lock_max = max(float(user_lock_max), self.user_lock)
        self.window = float(window)
        self.trust_ttl = float(trust_ttl)
        self.trusted_per_user = max(0, int(trusted_per_user))
        self.max_entries = int(max_entries)
        self._clock = clock
        self._lock = threading.Lock()
        self._addresses: OrderedDict[str, _Counter] = OrderedDict()
        self._users: OrderedDict[str, _Counter] = OrderedDict()

    @staticmethod
    def _source(source: object) -> str:
        return source[:_MAX_SOURCE] if isinstance(source, str) else ""

    # -- the three calls of a login --------------------------------------------------------
    def check(self, user: str, source: str = "") -> None:
        """Raise ``TOO_MANY_ATTEMPTS`` when ``user`` may not try now from ``source``.

        Raises
        ------
        DiosError
            ``TOO_MANY_ATTEMPTS`` with ``retry_after`` (whole seconds) while the address
            is locked, or the user name is locked and ``source`` is not one of its
            trusted addresses.
        """
        source = self._source(source)
        with self._lock:
            now = self._clock()
            wait = 0.0
            addr = self._addresses.get(source) if source else None
            if addr is not None:
                wait = max(wait, addr.locked_until - now)
            usr = self._users.get(user)
            if usr is not None and not self._is_trusted(usr, source, now):
                wait = max(wait, min(usr.locked_until - now, self.user_lock_max))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise DiosError(TOO_MANY_ATTEMPTS, f"{seconds} s", retry_after=seconds)

    def failed(self, user: str, source: str = "") -> None:
        """Count a failed login of ``user`` from ``source``; lock what crossed its
        threshold (and log it)."""
        source = self._source(source)
        with self._lock:
            now = self._clock()
            if source:
                addr = self._entry(self._addresses, source, self.address_threshold, now)
                if self._count(addr, self.address_threshold, now):
                    seconds = self._lock_for(addr, self.address_lock, self.address_lock_max, now)
                    log.warning("login: address %s locked out for %.0f s after %d failed "
                                "logins within %.0f s (lockout %d)", source, seconds,
                                self.address_threshold, self.window, addr.lockouts)
            usr = self._entry(self._users, user, self.user_threshold, now)
            if self._count(usr, self.user_threshold, now):
                seconds = self._lock_for(usr, self.user_lock, self.user_lock_max, now)
                log.warning("login: user %r held for %.0f s (except from its trusted "
                            "addresses) after %d failed logins within %.0f s", user, seconds,
                            self.user_threshold, self.window)

    def succeeded(self, user: str, source: str = "") -> None:
        """Reset the counters of ``source`` and ``user``; trust ``source`` for ``user``."""
        source = self._source(source)
        with self._lock:
            now = self._clock()
            if source:
                self._addresses.pop(source, None)
            usr = self._users.get(user)
            if usr is None and not (source and self.trusted_per_user):
                return
            if usr is None:
                usr = self._entry(self._users, user, self.user_threshold, now)
            usr.failures.clear()
            usr.locked_until = 0.0
            usr.lockouts = 0
            usr.last = now
            if source and self.trusted_per_user:
                usr.trusted.pop(source, None)
                usr.trusted[source] = now
                while len(usr.trusted) > self.trusted_per_user:
                    usr.trusted.popitem(last=False)

    # -- introspection ---------------------------------------------------------------------
    def locked(self, user: str, source: str = "") -> float:
        """Seconds ``user`` must still wait from ``source`` (0.0 when it may try now)."""
        try:
            self.check(user, source)
        except DiosError as err:
            return float(err.data["retry_after"])  # type: ignore[arg-type]
        return 0.0

    def sizes(self) -> tuple[int, int]:
        """(addresses, user names) tracked now."""
        with self._lock:
            return len(self._addresses), len(self._users)

    # -- internals (called with the lock held) -----------------------------------------------
    def _is_trusted(self, usr: _Counter, source: str, now: float) -> bool:
        if not source:
            return False
        since = usr.trusted.get(source)
        return since is not None and now - since < self.trust_ttl

    def _entry(self, table: OrderedDict[str, _Counter], key: str, threshold: int,
               now: float) -> _Counter:
        entry = table.get(key)
        if entry is None:
            entry = table[key] = _Counter(deque(maxlen=threshold), last=now)
            self._prune(table, now)
        else:
            table.move_to_end(key)
            if self._idle(entry, now):  # quiet for long: its lockouts are forgiven
                entry.failures.clear()
                entry.lockouts = 0
        entry.last = now
        return entry

    def _idle(self, entry: _Counter, now: float) -> bool:
        """No failure for a window and the longest lock, not locked, no trusted address."""
        return (now - entry.last > self.window + self.address_lock_max
                and entry.locked_until <= now
                and all(now - t >= self.trust_ttl for t in entry.trusted.values()))

    def _prune(self, table: OrderedDict[str, _Counter], now: float) -> None:
        """Forget idle entries from the least recently touched end; beyond
        ``max_entries`` forget the oldest whatever their state."""
        while table:
            key, entry = next(iter(table.items()))
            if len(table) > self.max_entries or self._idle(entry, now):
                del table[key]
            else:
                break

    def _count(self, entry: _Counter, threshold: int, now: float) -> bool:
        """Add a failure; True when ``threshold`` failures fall within the window."""
        entry.failures.append(now)
        return len(entry.failures) >= threshold and now - entry.failures[0] <= self.window

    @staticmethod
    def _lock_for(entry: _Counter, first: float, cap: float, now: float) -> float:
        entry.lockouts += 1
        seconds = min(first * 2.0 ** min(entry.lockouts - 1, 60), cap)
        entry.locked_until = max(entry.locked_until, now + seconds)
        return seconds


class HashLimiter:
    """At most ``concurrency`` password hashes at once, at most ``queue`` callers waiting.

    Parameters
    ----------
    concurrency : int
        Hashes run at once (default 2).
    queue : int
        Callers that may wait for a free slot (default 32); further callers are refused.
    wait : float
        Longest wait for a slot in seconds (default 5).
    """

    def __init__(self, concurrency: int = 2, queue: int = 32, wait: float = 5.0) -> None:
        if concurrency < 1 or queue < 0 or wait < 0:
            raise ValueError("concurrency must be at least 1, queue and wait not negative")
        self.concurrency = int(concurrency)
        self.queue = int(queue)
        self.wait = float(wait)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._lock = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        return self._waiting

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in a hashing slot.

        Raises
        ------
        DiosError
            ``LIMIT_REACHED`` when ``queue`` callers already wait, or no slot freed
            within ``wait`` seconds.
        """
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self.queue:
                    raise DiosError(LIMIT_REACHED, "too many logins and password changes at "
                                    "once; retry in a few seconds", retry_after=1)
                self._waiting += 1
            try:
                got = self._slots.acquire(timeout=self.wait)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not got:
                raise DiosError(LIMIT_REACHED, "password checks are busy; retry in a few "
                                "seconds", retry_after=1)
        try:
            return fn(*args)
        finally:
            self._slots.release()
