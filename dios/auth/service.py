"""The auth service: users, password hashes, tokens, the guest token.

Passwords are hashed with scrypt (``hashlib.scrypt``, 16 random salt bytes, N=2**15,
r=8, p=1, 32-byte key) and stored as ``scrypt$N$r$p$<salt b64>$<key b64>``, so the cost
can be raised later without invalidating stored hashes. Comparison is constant-time
(``hmac.compare_digest``) and an unknown user name costs the same scrypt run as a wrong
password.

Tokens are JWT HS256 with exactly the seed's claims ``exp``, ``id``, ``name``. The
signing key is derived per user from the install's secret and the user's current
password hash, so changing a password revokes every token issued before. The secret is
64 random bytes generated at first start in ``<data_dir>/jwt-secret`` (mode 0600).

First start: an ``admin`` user is created with a random initial password that is written
to ``<data_dir>/initial-admin-password`` (mode 0600) and logged once; the account is
flagged *must change password*. Until it is changed every start and every admin login
logs a warning naming that file, and the admin may only change its password and read
(``PASSWORD_CHANGE_REQUIRED`` otherwise). The file is deleted when the password is
changed. A ``guest`` principal (id 2, as in the seed) backs the read-only guest token.

Abuse resistance (see :mod:`dios.auth.throttle`): logins are throttled per source address
and per user name (``TOO_MANY_ATTEMPTS`` with ``retry_after``, before any hash is run), and
at most ``hash_concurrency`` scrypt runs happen at once across login, password change and
reset, user creation and the unknown-user comparison, with at most ``hash_queue`` callers
waiting (``LIMIT_REACHED`` beyond), so a login flood cannot exhaust memory. The throttle
state is in memory.

Verification and revocation: :meth:`AuthService.verify` keeps a bounded cache of the
tokens it verified (the principal and the user's *revision*). Each user has a revision
counter, in memory, bumped after every change that must end its sessions or change what
they may do: a password change or reset (reason ``"password"``), a role change
(``"role"``), disabling (``"disabled"``) and deletion (``"deleted"``). A cached entry
counts only while the user's revision is the one it was verified at, the token has not
expired and the entry is younger than ``token_cache_ttl`` (which bounds how long a change
made by another process on the same database goes unseen). Long-lived connections (RPC,
WebSocket) authenticate once, remember :meth:`AuthService.revision` and register with
:meth:`AuthService.add_listener` to be told ``(uid, reason)`` at once after each such
change, then verify their token again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from dios.auth.roles import GUEST, ROLES, Principal, require
from dios.auth.throttle import HashLimiter, LoginThrottle
from dios.codes import (
    BAD_CREDENTIALS,
    FORBIDDEN,
    INVALID_FIELD,
    MISSING_FIELD,
    NOT_FOUND,
    PASSWORD_MISMATCH,
    PASSWORD_WEAK,
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    USER_EXISTS,
    DiosError,
)
from dios.store.db import Database
from dios.store.files import create_once, read_private

log = logging.getLogger("dios.auth")

__all__ = ["AuthService", "hash_password", "verify_password"]

SECRET_FILE = "jwt-secret"
INITIAL_PASSWORD_FILE = "initial-admin-password"
#: scrypt cost (N, r, p): about 32 MiB and a tenth of a second per hash.
SCRYPT_PARAMS = (2**15, 8, 1)
_SALT_BYTES = 16
_KEY_BYTES = 32
_USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_MAX_PASSWORD = 128
#: The reasons given to revocation listeners.
REVOCATION_REASONS = ("password", "role", "disabled", "deleted")


# -- password hashing ----------------------------------------------------------------------
def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r * p + (1 << 20), dklen=_KEY_BYTES)


def hash_password(password: str, params: tuple[int, int, int] = SCRYPT_PARAMS) -> str:
    """Hash ``password`` with a fresh random salt; return the storable string."""
    n, r, p = params
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, n, r, p)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (constant-time; False for a bad record)."""
    try:
        alg, n, r, p, salt, key = stored.split("$")
        if alg != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        got = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def check_password_strength(password: str, username: str = "") -> None:
    """Raise ``PASSWORD_WEAK`` unless ``password`` has 8-128 characters with letters and
    digits and is not the user name."""
    if not isinstance(password, str):
        raise DiosError(INVALID_FIELD, "new_password must be a string", field="new_password")
    if len(password) < 8 or len(password) > _MAX_PASSWORD:
        raise DiosError(PASSWORD_WEAK, f"use 8 to {_MAX_PASSWORD} characters")
    if not (any(c.isalpha() for c in password) and any(c.isdigit() for c in password)):
        raise DiosError(PASSWORD_WEAK, "use letters and digits")
    if username and password.lower() == username.lower():
        raise DiosError(PASSWORD_WEAK, "the password may not be the user name")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _str_field(args: dict[str, Any], name: str, max_len: int = _MAX_PASSWORD) -> str:
    value = args.get(name)
    if value is None or value == "":
        raise DiosError(MISSING_FIELD, name, field=name)
    if not isinstance(value, str):
        raise DiosError(INVALID_FIELD, f"{name} must be a string", field=name)
    if len(value) > max_len:
        raise DiosError(INVALID_FIELD, f"{name} longer than {max_len}", field=name)
    return value


class AuthService:
    """Users, logins, tokens and permissions.

    Parameters
    ----------
    db : Database
        The engine's database (``users`` table).
    data_dir : path
        Where the signing secret and the initial admin password live.
    token_ttl : float
        Lifetime of a login token in seconds (default 12 h).
    guest_ttl : float
        Lifetime of a guest token in seconds (default 24 h).
    initial_admin_password : str, optional
        The first admin password to use instead of a random one (provisioning, tests); it
        must still be changed at first login.
    scrypt_params : (N, r, p)
        Hash cost for new hashes.
    clock : callable
        Seconds since the epoch (``time.time``); injectable for tests of expiry.
    hash_concurrency : int
        scrypt runs at once, at most (default 2).
    hash_queue : int
        Callers waiting for a hashing slot, at most (default 32); more get
        ``LIMIT_REACHED`` at once.
    hash_wait : float
        Longest wait for a hashing slot in seconds (default 5), then ``LIMIT_REACHED``.
    token_cache_size : int
        Verified tokens cached, at most (default 4096; 0 turns the cache off).
    token_cache_ttl : float
        Longest time a cached verification is trusted before the database is read again
        (default 60 s).
    throttle_clock : callable
        Monotonic seconds for the login throttle (``time.monotonic``); injectable for tests.
    **throttle_options
        Keywords of :class:`~dios.auth.throttle.LoginThrottle`: ``address_threshold``,
        ``address_lock``, ``address_lock_max``, ``user_threshold``, ``user_lock``,
        ``user_lock_max``, ``window``, ``trust_ttl``, ``trusted_per_user``, ``max_entries``.
    """

    def __init__(self, db: Database, data_dir: str | os.PathLike[str], *,
                 token_ttl: float = 12 * 3600, guest_ttl: float = 24 * 3600,
                 initial_admin_password: str | None = None,
                 scrypt_params: tuple[int, int, int] = SCRYPT_PARAMS,
                 clock: Callable[[], float] = time.time,
                 hash_concurrency: int = 2, hash_queue: int = 32, hash_wait: float = 5.0,
                 token_cache_size: int = 4096, token_cache_ttl: float = 60.0,
                 throttle_clock: Callable[[], float] = time.monotonic,
                 **throttle_options: Any) -> None:
        self.db = db
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.token_ttl = float(token_ttl)
        self.guest_ttl = float(guest_ttl)
        self.scrypt_params = scrypt_params
        self._clock = clock
        self.hashing = HashLimiter(hash_concurrency, hash_queue, hash_wait)
        self.throttle = LoginThrottle(clock=throttle_clock, **throttle_options)
        self.token_cache_size = max(0, int(token_cache_size))
        self.token_cache_ttl = float(token_cache_ttl)
        self._cache: dict[str, tuple[Principal, int, float]] = {}
        self._cache_lock = threading.Lock()
        self._revisions: dict[int, int] = {}
        self._listeners: tuple[Callable[[int, str], None], ...] = ()
        self._listeners_lock = threading.Lock()
        # compared against when the user is unknown, so that costs one scrypt run too
        self._dummy_hash = self._hash(secrets.token_hex(8))
        self._secret, created = create_once(self.data_dir / SECRET_FILE, secrets.token_bytes(64))
        if created:
            log.info("generated a new token signing secret in %s", self.data_dir / SECRET_FILE)
        if len(self._secret) < 32:
            raise DiosError(TOKEN_INVALID, f"{self.data_dir / SECRET_FILE} is too short; "
                            "delete it to generate a new one")
        self._bootstrap(initial_admin_password)
        self.report_default_password()

    # -- first start -----------------------------------------------------------------------
    @property
    def initial_password_file(self) -> Path:
        return self.data_dir / INITIAL_PASSWORD_FILE

    def _bootstrap(self, initial_password: str | None) -> None:
        if self.db.query_one("SELECT id FROM users WHERE username = ?", ["admin"]) is None:
            if initial_password is None:
                pw_bytes, _ = create_once(self.initial_password_file,
                                          secrets.token_urlsafe(12).encode())
                initial_password = pw_bytes.decode().strip()
                told = f"it is in {self.initial_password_file}"
            else:
                told = "it was given in the configuration"
            now = _now_iso()
            with self.db.transaction() as tx:
                got = tx.query_one(
                    "INSERT INTO users (username, password_hash, role, avatar, "
                    "must_change_password, disabled, created_at, updated_at) "
                    "VALUES (?, ?, ?, '', 1, 0, ?, ?) ON CONFLICT (username) DO NOTHING "
                    "RETURNING id",
                    ["admin", self._hash(initial_password), "admin", now, now])
            if got is not None:
                log.warning("%s\nCREATED USER 'admin' WITH A ONE-TIME PASSWORD (%s).\n"
                            "It must be changed at the first login.\n%s", "!" * 72, told,
                            "!" * 72)
        now = _now_iso()
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO users (username, password_hash, role, avatar, "
                       "must_change_password, disabled, created_at, updated_at) "
                       "VALUES (?, '!', ?, '', 0, 0, ?, ?) ON CONFLICT (username) DO NOTHING",
                       ["guest", GUEST, now, now])

    def default_password_pending(self) -> bool:
        """True while the admin still has its initial password."""
        row = self.db.query_one("SELECT must_change_password FROM users WHERE username = ?",
                                ["admin"])
        return bool(row and row["must_change_password"])

    def report_default_password(self) -> None:
        """Log a loud warning when the initial admin password is still in use."""
        if self.default_password_pending():
            where = (f" (see {self.initial_password_file})"
                     if self.initial_password_file.exists() else "")
            log.warning("%s\nTHE 'admin' USER STILL HAS ITS INITIAL PASSWORD%s: change it now.\n%s",
                        "!" * 72, where, "!" * 72)

    # -- bounded hashing --------------------------------------------------------------------
    def _hash(self, password: str) -> str:
        """A new hash of ``password`` in a hashing slot (``LIMIT_REACHED`` when full)."""
        return self.hashing.run(hash_password, password, self.scrypt_params)

    def _check(self, password: str, stored: str) -> bool:
        """:func:`verify_password` in a hashing slot (``LIMIT_REACHED`` when full)."""
        return self.hashing.run(verify_password, password, stored)

    # -- revocation ------------------------------------------------------------------------
    def revision(self, uid: int) -> int:
        """The revision of user ``uid``: 0 at start, bumped after each password change or
        reset, role change, disabling and deletion (in memory, per process)."""
        return self._revisions.get(uid, 0)

    def add_listener(self, fn: Callable[[int, str], None]) -> None:
        """Call ``fn(uid, reason)`` after each change that bumps a user's revision.

        ``reason`` is one of ``"password"``, ``"role"``, ``"disabled"``, ``"deleted"``.
        ``fn`` runs on the thread that made the change, after it was committed, so it
        should only take note (schedule a re-check, close a connection) and return;
        what it raises is logged, never passed to the caller of the change.
        """
        with self._listeners_lock:
            if fn not in self._listeners:
                self._listeners = (*self._listeners, fn)

    def remove_listener(self, fn: Callable[[int, str], None]) -> None:
        """Stop calling ``fn`` (nothing happens when it was not registered)."""
        with self._listeners_lock:
            self._listeners = tuple(f for f in self._listeners if f != fn)

    def _revoke(self, uid: int, reason: str) -> None:
        """Bump ``uid``'s revision (cached verifications of its tokens end) and tell the
        listeners. Called after the change is committed."""
        with self._cache_lock:
            self._revisions[uid] = self._revisions.get(uid, 0) + 1
        for fn in self._listeners:
            try:
                fn(uid, reason)
            except Exception:  # noqa: BLE001 - a listener never breaks the change
                log.exception("revocation listener %r failed for user %d (%s)", fn, uid, reason)

    # -- tokens ----------------------------------------------------------------------------
    def _user_key(self, uid: int, password_hash: str) -> bytes:
        return hmac.new(self._secret, f"{uid}\x00{password_hash}".encode(), hashlib.sha256).digest()

    def _issue(self, user: dict[str, Any], ttl: float) -> tuple[str, int]:
        exp = int(self._clock() + ttl)
        claims = {"exp": exp, "id": int(user["id"]), "name": user["username"]}
        token = jwt.encode(claims, self._user_key(user["id"], user["password_hash"]),
                           algorithm="HS256")
        return token, exp

    def verify(self, token: str) -> Principal:
        """Check ``token``; return its principal.

        Raises
        ------
        DiosError
            ``TOKEN_EXPIRED`` past ``exp``; ``TOKEN_INVALID`` for anything else wrong
            (malformed, wrong algorithm, forged signature, unknown or disabled user, a
            token issued before the user's last password change).
        """
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise DiosError(TOKEN_INVALID, "no token")
        cached = self._cache.get(token)
        if cached is not None:
            principal, revision, checked = cached
            if (revision == self._revisions.get(principal.uid, 0)
                    and time.monotonic() - checked < self.token_cache_ttl):
                if self._clock() >= principal.expires:
                    self._forget(token)
                    raise DiosError(TOKEN_EXPIRED)
                return principal
            self._forget(token)
        return self._verify_uncached(token)

    def _forget(self, token: str) -> None:
        with self._cache_lock:
            self._cache.pop(token, None)

    def _verify_uncached(self, token: str) -> Principal:
        try:
            if jwt.get_unverified_header(token).get("alg") != "HS256":
                raise DiosError(TOKEN_INVALID, "algorithm must be HS256")
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            raise DiosError(TOKEN_INVALID, "malformed token") from exc
        uid = unverified.get("id")
        if not isinstance(uid, int) or isinstance(uid, bool):
            raise DiosError(TOKEN_INVALID, "token has no user id")
        # read before the user row: a change committed after this read bumps it, so an
        # entry cached from an older row never counts
        revision = self._revisions.get(uid, 0)
        checked = time.monotonic()
        user = self.db.query_one("SELECT * FROM users WHERE id = ?", [uid])
        if user is None:
            raise DiosError(TOKEN_INVALID, "unknown user")
        try:
            claims = jwt.decode(token, self._user_key(uid, user["password_hash"]),
                                algorithms=["HS256"],
                                options={"require": ["exp", "id", "name"], "verify_exp": False})
        except jwt.InvalidTokenError as exc:
            raise DiosError(TOKEN_INVALID, "bad signature or claims") from exc
        exp = claims["exp"]
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise DiosError(TOKEN_INVALID, "bad exp claim")
        if self._clock() >= exp:
            raise DiosError(TOKEN_EXPIRED)
        if claims["name"] != user["username"] or user["disabled"]:
            raise DiosError(TOKEN_INVALID, "user changed or disabled")
        principal = Principal(int(user["id"]), user["username"], user["role"],
                              bool(user["must_change_password"]), float(min(exp, 2**53)))
        if self.token_cache_size:
            with self._cache_lock:
                while len(self._cache) >= self.token_cache_size:
                    del self._cache[next(iter(self._cache))]  # the oldest entry
                self._cache[token] = (principal, revision, checked)
        return principal

    #: The shim's name for :func:`dios.auth.roles.require`.
    @staticmethod
    def authorize(principal: Principal, permission: str) -> None:
        """Raise ``FORBIDDEN`` / ``PASSWORD_CHANGE_REQUIRED`` unless allowed."""
        require(principal, permission)

    require = authorize

    def guest_token(self) -> str:
        """A fresh read-only token for the ``guest`` principal."""
        user = self.db.query_one("SELECT * FROM users WHERE username = ?", ["guest"])
        if user is None:  # pragma: no cover - created at start
            raise DiosError(NOT_FOUND, "guest user missing")
        return self._issue(user, self.guest_ttl)[0]

    # -- login and passwords ---------------------------------------------------------------
    def login(self, username: Any, password: Any, *, source: str = "") -> dict[str, Any]:
        """Log in; return the seed's reply ``{token, expire, uid, name, avatar}``.

        Parameters
        ----------
        username, password : str
            The credentials.
        source : str
            The client's address (``"127.0.0.1"``), for the per-address throttle; empty
            when unknown (the user's throttle still applies).

        Raises
        ------
        DiosError
            ``BAD_CREDENTIALS`` for an unknown user, a wrong password, a disabled user or
            the guest (which has no password); ``TOO_MANY_ATTEMPTS`` (``retry_after``
            seconds) while the address or the user name is locked out after failed
            logins, whatever the password; ``LIMIT_REACHED`` when too many password
            checks are under way.
        """
        name = _str_field({"username": username}, "username", 64)
        pw = _str_field({"password": password}, "password")
        self.throttle.check(name, source)
        user = self.db.query_one("SELECT * FROM users WHERE username = ?", [name])
        if user is None or user["role"] == GUEST:
            self._check(pw, self._dummy_hash)
            self.throttle.failed(name, source)
            raise DiosError(BAD_CREDENTIALS)
        if not self._check(pw, user["password_hash"]) or user["disabled"]:
            self.throttle.failed(name, source)
            raise DiosError(BAD_CREDENTIALS)
        self.throttle.succeeded(name, source)
        if user["must_change_password"]:
            log.warning("user %r logged in with a password that must be changed", name)
        token, exp = self._issue(user, self.token_ttl)
        return {"token": token, "expire": exp, "uid": int(user["id"]), "name": user["username"],
                "avatar": user["avatar"]}

    def change_password(self, principal: Principal, old_password: Any, new_password: Any,
                        confirm_new_password: Any) -> dict[str, Any]:
        """Change the caller's own password; return ``{}`` (the seed's reply).

        Order of checks: fields present, old password right (``BAD_CREDENTIALS``), new
        and confirmation equal (``PASSWORD_MISMATCH``), strength (``PASSWORD_WEAK``, also
        when the new password equals the old one). Tokens issued before are revoked.
        """
        require(principal, "auth.self")
        args = {"old_password": old_password, "new_password": new_password,
                "confirm_new_password": confirm_new_password}
        old = _str_field(args, "old_password")
        new = _str_field(args, "new_password")
        confirm = _str_field(args, "confirm_new_password")
        user = self.db.query_one("SELECT * FROM users WHERE id = ?", [principal.uid])
        if user is None:
            raise DiosError(TOKEN_INVALID, "unknown user")
        if not self._check(old, user["password_hash"]):
            raise DiosError(BAD_CREDENTIALS, "old password is wrong")
        if new != confirm:
            raise DiosError(PASSWORD_MISMATCH)
        check_password_strength(new, user["username"])
        if new == old:
            raise DiosError(PASSWORD_WEAK, "the new password must differ from the old one")
        new_hash = self._hash(new)
        with self.db.transaction() as tx:
            tx.update_versioned("users", "id", user["id"], user["version"], {
                "password_hash": new_hash, "must_change_password": 0,
                "updated_at": _now_iso()})
        self._revoke(int(user["id"]), "password")
        if user["username"] == "admin" and self.initial_password_file.exists():
            self.initial_password_file.unlink()
        log.info("user %r changed the password", user["username"])
        return {}

    # -- user management (admin only) ------------------------------------------------------
    @staticmethod
    def _public(user: dict[str, Any]) -> dict[str, Any]:
        return {"uid": int(user["id"]), "name": user["username"], "role": user["role"],
                "avatar": user["avatar"], "disabled": bool(user["disabled"]),
                "must_change_password": bool(user["must_change_password"]),
                "version": int(user["version"])}

    def list_users(self, principal: Principal) -> list[dict[str, Any]]:
        """Every user except the guest principal."""
        require(principal, "user.manage")
        rows = self.db.query("SELECT * FROM users WHERE role <> ? ORDER BY id", [GUEST])
        return [self._public(r) for r in rows]

    def user(self, principal: Principal, uid: int) -> dict[str, Any]:
        require(principal, "user.manage")
        return self._public(self._get_user(uid))

    def _get_user(self, uid: Any) -> dict[str, Any]:
        if not isinstance(uid, int) or isinstance(uid, bool):
            raise DiosError(INVALID_FIELD, "uid must be an integer", field="uid")
        row = self.db.query_one("SELECT * FROM users WHERE id = ? AND role <> ?", [uid, GUEST])
        if row is None:
            raise DiosError(NOT_FOUND, f"user {uid}", field="uid")
        return row

    @staticmethod
    def _check_role(role: Any) -> str:
        if role is None or role == "":
            raise DiosError(MISSING_FIELD, "role", field="role")
        if role not in ROLES:
            raise DiosError(INVALID_FIELD, f"role must be one of {', '.join(ROLES)}", field="role")
        return role

    @staticmethod
    def _check_avatar(avatar: Any) -> str:
        if not isinstance(avatar, str) or len(avatar) > 1024:
            raise DiosError(INVALID_FIELD, "avatar must be a string of at most 1024 characters",
                            field="avatar")
        return avatar

    def create_user(self, principal: Principal, username: Any, password: Any, role: Any,
                    avatar: Any = "") -> dict[str, Any]:
        """Create a user (``USER_EXISTS`` if the name is taken). The password must be
        changed at the user's first login."""
        require(principal, "user.manage")
        name = _str_field({"username": username}, "username", 64)
        if not _USERNAME.fullmatch(name):
            raise DiosError(INVALID_FIELD, "username: letters, digits, '_', '.', '@', '-'",
                            field="username")
        role = self._check_role(role)
        avatar = self._check_avatar(avatar)
        pw = _str_field({"password": password}, "password")
        check_password_strength(pw, name)
        pw_hash = self._hash(pw)
        now = _now_iso()
        try:
            with self.db.transaction() as tx:
                uid = tx.insert("users", {
                    "username": name, "password_hash": pw_hash,
                    "role": role, "avatar": avatar, "must_change_password": 1, "disabled": 0,
                    "created_at": now, "updated_at": now}, returning="id")
        except self.db.integrity_errors as exc:
            raise DiosError(USER_EXISTS, name, field="username") from exc
        log.info("user %r (%s) created by %r", name, role, principal.name)
        return self._public(self._get_user(int(uid)))

    def update_user(self, principal: Principal, uid: Any, *, role: Any = None,
                    avatar: Any = None, disabled: Any = None,
                    expected_version: int | None = None) -> dict[str, Any]:
        """Change a user's role, avatar or disabled flag (``CONFLICT`` on a stale version)."""
        require(principal, "user.manage")
        changes: dict[str, Any] = {}
        if role is not None:
            changes["role"] = self._check_role(role)
        if avatar is not None:
            changes["avatar"] = self._check_avatar(avatar)
        if disabled is not None:
            if not isinstance(disabled, bool):
                raise DiosError(INVALID_FIELD, "disabled must be a boolean", field="disabled")
            changes["disabled"] = int(disabled)
        with self.db.transaction() as tx:
            user = self._get_user(uid)
            user = tx.lock("users", "id", uid) or user
            if user["id"] == principal.uid and (changes.get("disabled") or
                                               changes.get("role", "admin") != "admin"):
                raise DiosError(FORBIDDEN, "an admin may not demote or disable itself")
            version = user["version"] if expected_version is None else expected_version
            changes["updated_at"] = _now_iso()
            tx.update_versioned("users", "id", uid, version, changes)
        if "role" in changes and changes["role"] != user["role"]:
            self._revoke(uid, "role")
        if changes.get("disabled") and not user["disabled"]:
            self._revoke(uid, "disabled")
        return self._public(self._get_user(uid))

    def reset_password(self, principal: Principal, uid: Any, new_password: Any) -> dict[str, Any]:
        """Set another user's password; they must change it at their next login."""
        require(principal, "user.manage")
        user = self._get_user(uid)
        pw = _str_field({"new_password": new_password}, "new_password")
        check_password_strength(pw, user["username"])
        pw_hash = self._hash(pw)
        with self.db.transaction() as tx:
            tx.update_versioned("users", "id", uid, user["version"], {
                "password_hash": pw_hash, "must_change_password": 1,
                "updated_at": _now_iso()})
        self._revoke(uid, "password")
        return {}

    def delete_user(self, principal: Principal, uid: Any) -> dict[str, Any]:
        """Delete a user; an admin cannot delete itself."""
        require(principal, "user.manage")
        user = self._get_user(uid)
        if user["id"] == principal.uid:
            raise DiosError(FORBIDDEN, "an admin may not delete itself")
        self.db.execute("DELETE FROM users WHERE id = ?", [uid])
        self._revoke(uid, "deleted")
        return {}

    def roles(self) -> list[str]:
        """The assignable roles, as the seed's role list."""
        return list(ROLES)

    def secret_path(self) -> Path:
        return self.data_dir / SECRET_FILE

    def _reload_secret(self) -> None:  # used when an operator rotates the secret file
        self._secret = read_private(self.secret_path())
        with self._cache_lock:
            self._cache.clear()
