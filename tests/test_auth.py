"""Auth: scrypt hashes, first-start admin, JWT tokens as the seed's, expiry and forgery,
change password, user management, the permission table, the cache of verified tokens and
revocation (revisions and listeners)."""

from __future__ import annotations

import base64
import json
import logging
import os

import jwt
import pytest

import dios.auth.service as auth_service
from dios.auth import GUEST, PERMISSIONS, ROLES, AuthService, Principal, allowed, require
from dios.auth.service import INITIAL_PASSWORD_FILE, SECRET_FILE, hash_password, verify_password
from dios.codes import (
    BAD_CREDENTIALS,
    CONFLICT,
    FORBIDDEN,
    INVALID_FIELD,
    MISSING_FIELD,
    NOT_FOUND,
    PASSWORD_CHANGE_REQUIRED,
    PASSWORD_MISMATCH,
    PASSWORD_WEAK,
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    USER_EXISTS,
    DiosError,
)
from dios.store import open_database

FAST = (2**12, 8, 1)  # cheaper scrypt for tests that are not about hashing


class Clock:
    def __init__(self, t: float = 1_751_277_588.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def env(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'dios.db'}")
    yield db, tmp_path
    db.close()


def _svc(env, **kw) -> AuthService:
    db, d = env
    kw.setdefault("scrypt_params", FAST)
    return AuthService(db, d, **kw)


def _code(fn, *a, **kw):
    with pytest.raises(DiosError) as e:
        fn(*a, **kw)
    return e.value.code


def _ready_admin(svc: AuthService, password: str = "Adm1nPass") -> tuple[Principal, str]:
    """Log in with the initial password and change it; return (principal, token)."""
    initial = (svc.data_dir / INITIAL_PASSWORD_FILE).read_text().strip()
    first = svc.verify(svc.login("admin", initial)["token"])
    svc.change_password(first, initial, password, password)
    token = svc.login("admin", password)["token"]
    return svc.verify(token), token


# -- hashing -------------------------------------------------------------------------------
def test_hash_is_salted_scrypt_with_stored_parameters():
    a, b = hash_password("s3cret-pw"), hash_password("s3cret-pw")
    assert a != b
    for h in (a, b):
        alg, n, r, p, salt, key = h.split("$")
        assert (alg, int(n), int(r), int(p)) == ("scrypt", 2**15, 8, 1)
        assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(key)) == 32
        assert verify_password("s3cret-pw", h)
        assert not verify_password("s3cret-pX", h)
        assert not verify_password("", h)


@pytest.mark.parametrize("stored", ["", "!", "plain", "bcrypt$1$2$3$4$5",
                                    "scrypt$x$8$1$AAAA$AAAA", "scrypt$16384$8$1$@@@$AAAA"])
def test_malformed_stored_hash_never_verifies(stored):
    assert not verify_password("anything", stored)


def test_hash_parameters_are_read_from_the_record():
    h = hash_password("pw12345678", (2**10, 4, 1))
    assert h.startswith("scrypt$1024$4$1$") and verify_password("pw12345678", h)


def test_compare_is_constant_time(monkeypatch):
    calls = []
    real = auth_service.hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth_service.hmac, "compare_digest", spy)
    h = hash_password("pw12345678", FAST)
    assert verify_password("pw12345678", h) and not verify_password("nope", h)
    assert calls == [(32, 32), (32, 32)]


def test_unknown_user_costs_a_hash_like_a_wrong_password(env, monkeypatch):
    svc = _svc(env)
    runs = []
    real = auth_service._scrypt
    monkeypatch.setattr(auth_service, "_scrypt", lambda *a: runs.append(1) or real(*a))
    assert _code(svc.login, "nobody", "whatever1") is BAD_CREDENTIALS
    assert _code(svc.login, "admin", "whatever1") is BAD_CREDENTIALS
    assert len(runs) == 2


# -- first start -----------------------------------------------------------------------------
def test_first_start_creates_private_secret_and_admin(env, caplog):
    db, d = env
    with caplog.at_level(logging.WARNING, logger="dios.auth"):
        svc = _svc(env)
    secret = d / SECRET_FILE
    pw_file = d / INITIAL_PASSWORD_FILE
    assert len(secret.read_bytes()) == 64 and (os.stat(secret).st_mode & 0o777) == 0o600
    assert (os.stat(pw_file).st_mode & 0o777) == 0o600
    initial = pw_file.read_text().strip()
    assert len(initial) >= 16 and initial != "123456"
    assert "ONE-TIME PASSWORD" in caplog.text and "INITIAL PASSWORD" in caplog.text
    assert str(pw_file) in caplog.text and initial not in caplog.text  # the path, never the secret
    reply = svc.login("admin", initial)
    assert list(reply) == ["token", "expire", "uid", "name", "avatar"]
    assert (reply["uid"], reply["name"], reply["avatar"]) == (1, "admin", "")
    p = svc.verify(reply["token"])
    assert p == Principal(1, "admin", "admin", True)
    assert svc.default_password_pending()
    rows = db.query("SELECT id, username, role FROM users ORDER BY id")
    assert rows == [{"id": 1, "username": "admin", "role": "admin"},
                    {"id": 2, "username": "guest", "role": GUEST}]


def test_restart_keeps_secret_and_password_and_keeps_warning(env, caplog):
    svc = _svc(env)
    token = svc.login("admin", (svc.data_dir / INITIAL_PASSWORD_FILE).read_text())["token"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dios.auth"):
        again = _svc(env)
    assert "STILL HAS ITS INITIAL PASSWORD" in caplog.text
    assert "ONE-TIME PASSWORD" not in caplog.text
    assert again.verify(token).uid == 1  # same secret after restart
    caplog.clear()
    _ready_admin(again)
    with caplog.at_level(logging.WARNING, logger="dios.auth"):
        _svc(env)
    assert "INITIAL PASSWORD" not in caplog.text
    assert not (svc.data_dir / INITIAL_PASSWORD_FILE).exists()


def test_configured_initial_password_must_still_be_changed(env):
    svc = _svc(env, initial_admin_password="Provisioned1")
    assert not (svc.data_dir / INITIAL_PASSWORD_FILE).exists()
    p = svc.verify(svc.login("admin", "Provisioned1")["token"])
    assert p.must_change_password
    assert _code(require, p, "user.manage") is PASSWORD_CHANGE_REQUIRED
    assert _code(require, p, "study.write") is PASSWORD_CHANGE_REQUIRED
    require(p, "study.read")
    require(p, "auth.self")


def test_loose_secret_mode_is_tightened(env):
    _svc(env)
    secret = env[1] / SECRET_FILE
    os.chmod(secret, 0o644)
    svc = _svc(env)
    assert (os.stat(secret).st_mode & 0o777) == 0o600
    assert svc.guest_token()


# -- tokens -----------------------------------------------------------------------------------
def test_token_has_exactly_the_seed_claims(env):
    clock = Clock()
    svc = _svc(env, clock=clock, token_ttl=3600)
    p, token = _ready_admin(svc)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {"exp": int(clock.t + 3600), "id": 1, "name": "admin"}
    reply = svc.login("admin", "Adm1nPass")
    assert reply["expire"] == jwt.decode(reply["token"], options={"verify_signature": False})["exp"]


def test_token_expiry(env):
    clock = Clock()
    svc = _svc(env, clock=clock, token_ttl=600)
    _, token = _ready_admin(svc)
    clock.t += 599
    assert svc.verify(token).name == "admin"
    clock.t += 1
    assert _code(svc.verify, token) is TOKEN_EXPIRED


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_forged_and_malformed_tokens_are_invalid(env, tmp_path_factory):
    svc = _svc(env)
    _, token = _ready_admin(svc)
    svc.create_user(svc.verify(token), "tom", "Tech1234x", "tech")
    header, payload, sig = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = [
        "", "abc", "a.b.c", token + "x", f"{header}.{payload}.", f"{header}.{payload}",
        # signature of another payload
        f"{header}.{_b64({**claims, 'id': 3, 'name': 'tom'})}.{sig}",
        f"{header}.{_b64({**claims, 'exp': claims['exp'] + 10**6})}.{sig}",
        # alg none
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        # right claims, wrong keys
        jwt.encode(claims, b"x" * 64, algorithm="HS256"),
        jwt.encode(claims, (svc.data_dir / SECRET_FILE).read_bytes(), algorithm="HS256"),
        jwt.encode(claims, (svc.data_dir / SECRET_FILE).read_bytes(), algorithm="HS512"),
        # no id / bool id / unknown id
        jwt.encode({"exp": claims["exp"], "name": "admin"}, b"k" * 32, algorithm="HS256"),
        jwt.encode({**claims, "id": True}, b"k" * 32, algorithm="HS256"),
        jwt.encode({**claims, "id": 999}, b"k" * 32, algorithm="HS256"),
    ]
    for t in forged:
        assert _code(svc.verify, t) is TOKEN_INVALID, t
    for t in (None, 12, b"bytes", "x" * 5000):
        assert _code(svc.verify, t) is TOKEN_INVALID
    # a token of another install (another secret) is not accepted
    other_dir = tmp_path_factory.mktemp("other")
    other_db = open_database(f"sqlite:///{other_dir / 'o.db'}")
    other = AuthService(other_db, other_dir, scrypt_params=FAST,
                        initial_admin_password="Adm1nPass")
    assert _code(svc.verify, other.login("admin", "Adm1nPass")["token"]) is TOKEN_INVALID
    other_db.close()


def test_password_change_revokes_older_tokens(env):
    svc = _svc(env)
    p, old_token = _ready_admin(svc)
    svc.change_password(p, "Adm1nPass", "N3wPassword", "N3wPassword")
    assert _code(svc.verify, old_token) is TOKEN_INVALID
    assert svc.verify(svc.login("admin", "N3wPassword")["token"]).uid == 1
    assert _code(svc.login, "admin", "Adm1nPass") is BAD_CREDENTIALS


def test_guest_token_is_read_only(env):
    svc = _svc(env)
    token = svc.guest_token()
    assert set(jwt.decode(token, options={"verify_signature": False})) == {"exp", "id", "name"}
    g = svc.verify(token)
    assert (g.uid, g.name, g.role) == (2, "guest", GUEST)
    for perm, roles in PERMISSIONS.items():
        if GUEST in roles:
            require(g, perm)
            assert perm.endswith(".read")
        else:
            assert _code(require, g, perm) is FORBIDDEN
    assert _code(svc.change_password, g, "a", "b", "b") is FORBIDDEN
    # the token is handed out without authentication: no patient data
    assert {p for p, roles in PERMISSIONS.items() if GUEST in roles} == {
        "resource.read", "catalog.read", "task.read"}
    for perm in ("study.read", "image.read"):
        assert _code(require, g, perm) is FORBIDDEN
    assert _code(svc.login, "guest", "anything") is BAD_CREDENTIALS
    assert _code(svc.login, "guest", "!") is BAD_CREDENTIALS


# -- change password ---------------------------------------------------------------------------
def test_change_password_errors_leave_password_unchanged(env):
    svc = _svc(env)
    initial = (svc.data_dir / INITIAL_PASSWORD_FILE).read_text().strip()
    p = svc.verify(svc.login("admin", initial)["token"])
    cases = [
        (("", "Abcdefg1", "Abcdefg1"), MISSING_FIELD),
        ((initial, None, "Abcdefg1"), MISSING_FIELD),
        ((initial, "Abcdefg1", ""), MISSING_FIELD),
        ((initial, 12345678, "Abcdefg1"), INVALID_FIELD),
        (("wrong-old", "Abcdefg1", "Abcdefg1"), BAD_CREDENTIALS),
        ((initial, "Abcdefg1", "Abcdefg2"), PASSWORD_MISMATCH),
        ((initial, "short1", "short1"), PASSWORD_WEAK),
        ((initial, "onlyletters", "onlyletters"), PASSWORD_WEAK),
        ((initial, "1234567890", "1234567890"), PASSWORD_WEAK),
        ((initial, "Admin", "Admin"), PASSWORD_WEAK),
        ((initial, "a1" * 65, "a1" * 65), INVALID_FIELD),  # longer than 128
        ((initial, initial, initial), PASSWORD_WEAK),  # same as the old one
    ]
    for args, code in cases:
        assert _code(svc.change_password, p, *args) is code, args
    assert svc.verify(svc.login("admin", initial)["token"]).must_change_password
    assert svc.change_password(p, initial, "Abcdefg1", "Abcdefg1") == {}
    assert not svc.verify(svc.login("admin", "Abcdefg1")["token"]).must_change_password


def test_login_input_errors(env):
    svc = _svc(env)
    assert _code(svc.login, "", "x") is MISSING_FIELD
    assert _code(svc.login, "admin", "") is MISSING_FIELD
    assert _code(svc.login, None, "x") is MISSING_FIELD
    assert _code(svc.login, 5, "x") is INVALID_FIELD
    assert _code(svc.login, "admin", ["x"]) is INVALID_FIELD
    assert _code(svc.login, "a" * 65, "x") is INVALID_FIELD


# -- user management -----------------------------------------------------------------------------
def test_user_management_by_admin(env):
    svc = _svc(env)
    admin, _ = _ready_admin(svc)
    tom = svc.create_user(admin, "tom", "Tech1234x", "tech", "/a/tom.png")
    assert tom == {"uid": 3, "name": "tom", "role": "tech", "avatar": "/a/tom.png",
                   "disabled": False, "must_change_password": True, "version": 1}
    assert _code(svc.create_user, admin, "tom", "Tech1234x", "tech") is USER_EXISTS
    assert _code(svc.create_user, admin, "bad name", "Tech1234x", "tech") is INVALID_FIELD
    assert _code(svc.create_user, admin, "ann", "Tech1234x", "root") is INVALID_FIELD
    assert _code(svc.create_user, admin, "ann", "Tech1234x", GUEST) is INVALID_FIELD
    assert _code(svc.create_user, admin, "ann", "Tech1234x", "") is MISSING_FIELD
    assert _code(svc.create_user, admin, "ann", "weak", "tech") is PASSWORD_WEAK
    assert [u["name"] for u in svc.list_users(admin)] == ["admin", "tom"]
    login = svc.login("tom", "Tech1234x")
    assert login["avatar"] == "/a/tom.png"
    tp = svc.verify(login["token"])
    assert tp.role == "tech" and tp.must_change_password
    for other in ("list_users",):
        assert _code(getattr(svc, other), tp) is FORBIDDEN
    assert _code(svc.create_user, tp, "x", "Tech1234x", "tech") is FORBIDDEN
    # role change, stale version, disable
    assert svc.update_user(admin, 3, role="mgr")["role"] == "mgr"
    assert _code(svc.update_user, admin, 3, role="tech", expected_version=1) is CONFLICT
    assert svc.user(admin, 3)["role"] == "mgr"
    assert svc.verify(login["token"]).role == "mgr"  # role read at verify time
    svc.update_user(admin, 3, disabled=True)
    assert _code(svc.verify, login["token"]) is TOKEN_INVALID
    assert _code(svc.login, "tom", "Tech1234x") is BAD_CREDENTIALS
    svc.update_user(admin, 3, disabled=False)
    assert _code(svc.update_user, admin, 3, disabled="yes") is INVALID_FIELD
    assert _code(svc.update_user, admin, 3, role="boss") is INVALID_FIELD
    assert _code(svc.update_user, admin, 99, role="tech") is NOT_FOUND
    assert _code(svc.update_user, admin, 2, role="tech") is NOT_FOUND  # guest is not a user
    assert _code(svc.update_user, admin, "3", role="tech") is INVALID_FIELD
    # an admin cannot lock itself out
    assert _code(svc.update_user, admin, 1, role="tech") is FORBIDDEN
    assert _code(svc.update_user, admin, 1, disabled=True) is FORBIDDEN
    assert _code(svc.delete_user, admin, 1) is FORBIDDEN
    # reset password: must change again; old tokens revoked
    t2 = svc.login("tom", "Tech1234x")["token"]
    svc.reset_password(admin, 3, "Reset1234")
    assert _code(svc.verify, t2) is TOKEN_INVALID
    assert svc.verify(svc.login("tom", "Reset1234")["token"]).must_change_password
    svc.delete_user(admin, 3)
    assert _code(svc.login, "tom", "Reset1234") is BAD_CREDENTIALS
    assert [u["name"] for u in svc.list_users(admin)] == ["admin"]


def test_only_admin_manages_users(env):
    svc = _svc(env)
    admin, _ = _ready_admin(svc)
    for role in ("service", "mgr", "tech"):
        svc.create_user(admin, f"u_{role}", "Passw0rd1", role)
        u = svc.verify(svc.login(f"u_{role}", "Passw0rd1")["token"])
        svc.change_password(u, "Passw0rd1", "Passw0rd2", "Passw0rd2")
        u = svc.verify(svc.login(f"u_{role}", "Passw0rd2")["token"])
        assert _code(svc.list_users, u) is FORBIDDEN
        assert _code(svc.delete_user, u, 1) is FORBIDDEN
        assert _code(svc.reset_password, u, 1, "Whatever12") is FORBIDDEN


# -- permission table ---------------------------------------------------------------------------
def test_roles_are_the_seeds_role_list(env):
    assert list(ROLES) == ["service", "admin", "mgr", "tech"]
    assert _svc(env).roles() == ["service", "admin", "mgr", "tech"]


def test_permission_table():
    everyone = set(ROLES) | {GUEST}
    for perm, roles in PERMISSIONS.items():
        assert roles <= everyone, perm
        assert roles, perm
    assert PERMISSIONS["user.manage"] == {"admin"}
    assert PERMISSIONS["device.command"] == {"service"}
    assert "tech" not in PERMISSIONS["study.delete"]
    assert "tech" in PERMISSIONS["study.write"] and "tech" in PERMISSIONS["device.action"]
    assert {"admin", "mgr", "service"} <= PERMISSIONS["study.delete"]
    assert not allowed("tech", "user.manage") and allowed("admin", "user.manage")
    assert not allowed("admin", "no.such.permission")
    # the module docstring's table says exactly what PERMISSIONS says
    import re

    import dios.auth.roles as roles_mod

    lines = roles_mod.__doc__.splitlines()
    rule = next(line for line in lines if line.startswith("====="))
    spans = [m.span() for m in re.finditer(r"=+", rule)]
    documented = {}
    start = lines.index(rule)
    end = max(i for i, line in enumerate(lines) if line.startswith("====="))
    for line in lines[start:end]:
        if not line.startswith("``"):
            continue
        cells = [line[a:b].strip() for a, b in spans]
        documented[cells[0].strip("`")] = {r for r, c in zip([*ROLES, GUEST], cells[1:])
                                           if c == "x"}
    assert documented == {k: set(v) for k, v in PERMISSIONS.items()}


def test_require_errors():
    tech = Principal(5, "t", "tech")
    require(tech, "study.write")
    assert _code(require, tech, "study.delete") is FORBIDDEN
    assert _code(require, tech, "device.command") is FORBIDDEN
    assert _code(require, tech, "not.a.permission") is FORBIDDEN
    assert _code(require, None, "study.read") is TOKEN_INVALID
    assert _code(require, {"id": 1, "role": "admin"}, "study.read") is TOKEN_INVALID
    svc_admin = Principal(1, "admin", "admin")
    AuthService.authorize(svc_admin, "user.manage")
    assert svc_admin.get("id") == 1 and svc_admin["name"] == "admin" and svc_admin.get("x") is None


def test_event_images_permission():
    assert PERMISSIONS["event.images"] == {"service", "admin", "mgr", "tech"}
    assert PERMISSIONS["event.images"] == PERMISSIONS["image.read"]
    assert _code(require, Principal(2, "guest", GUEST), "event.images") is FORBIDDEN
    # like reading images, allowed before the first password change
    require(Principal(1, "admin", "admin", True), "event.images")


# -- token cache and revocation ----------------------------------------------------------------
class _Spy:
    """Counts database reads and JWT decodes of the auth service."""

    def __init__(self, svc: AuthService, monkeypatch) -> None:
        self.db_reads = 0
        self.decodes = 0
        real_query, real_decode = svc.db.query_one, auth_service.jwt.decode

        def query_one(*a, **kw):
            self.db_reads += 1
            return real_query(*a, **kw)

        def decode(*a, **kw):
            self.decodes += 1
            return real_decode(*a, **kw)

        monkeypatch.setattr(svc.db, "query_one", query_one)
        monkeypatch.setattr(auth_service.jwt, "decode", decode)


def test_principal_carries_the_token_expiry(env):
    clock = Clock()
    svc = _svc(env, clock=clock, token_ttl=600)
    _, token = _ready_admin(svc)
    p = svc.verify(token)
    assert p.expires == float(int(clock.t + 600)) and p.get("exp") == p.expires
    assert p == Principal(1, "admin", "admin")  # the expiry is not part of the identity
    assert Principal(1, "admin", "admin").expires == 0.0
    g = svc.verify(svc.guest_token())
    assert g.expires == float(int(clock.t + svc.guest_ttl))


def test_verified_tokens_are_cached_until_they_expire(env, monkeypatch):
    clock = Clock()
    svc = _svc(env, clock=clock, token_ttl=600)
    _, token = _ready_admin(svc)
    first = svc.verify(token)
    spy = _Spy(svc, monkeypatch)
    for _ in range(100):
        assert svc.verify(token) == first
    assert (spy.db_reads, spy.decodes) == (0, 0)  # no database read, no JWT decode
    clock.t = first.expires - 1
    assert svc.verify(token).uid == 1
    clock.t = first.expires
    assert _code(svc.verify, token) is TOKEN_EXPIRED
    assert _code(svc.verify, token) is TOKEN_EXPIRED


def test_token_cache_is_bounded_and_can_be_turned_off(env, monkeypatch):
    svc = _svc(env, token_cache_size=3)
    _ready_admin(svc)
    tokens = []
    for ttl in range(5):  # distinct tokens: distinct lifetimes
        svc.guest_ttl = 1000 + ttl
        tokens.append(svc.guest_token())
    for t in tokens:
        assert svc.verify(t).role == GUEST
    assert len(set(tokens)) == 5 and len(svc._cache) == 3
    assert svc.verify(tokens[0]).role == GUEST  # verified again after its eviction
    off = _svc(env, token_cache_size=0)
    token = off.login("admin", "Adm1nPass")["token"]
    off.verify(token)
    spy = _Spy(off, monkeypatch)
    off.verify(token)
    assert spy.db_reads == 1 and not off._cache


def test_changes_revoke_cached_tokens_at_once_and_tell_listeners(env, caplog):
    svc = _svc(env)
    admin, admin_token = _ready_admin(svc)
    heard: list[tuple[int, str]] = []
    svc.add_listener(lambda uid, reason: heard.append((uid, reason)))
    svc.add_listener(lambda uid, reason: 1 / 0)  # a broken listener breaks nothing

    svc.create_user(admin, "tom", "Tech1234x", "tech")
    tom_token = svc.login("tom", "Tech1234x")["token"]
    assert svc.verify(tom_token).role == "tech"  # now cached
    assert svc.revision(3) == 0 and heard == []
    # role change: the cached principal is replaced at once
    with caplog.at_level(logging.ERROR, logger="dios.auth"):
        svc.update_user(admin, 3, role="mgr")
    assert "revocation listener" in caplog.text and "ZeroDivisionError" in caplog.text
    assert heard == [(3, "role")] and svc.revision(3) == 1
    assert svc.verify(tom_token).role == "mgr"
    # same role again and an avatar change revoke nothing
    svc.update_user(admin, 3, role="mgr", avatar="/a/t.png")
    assert heard == [(3, "role")] and svc.revision(3) == 1
    # disable: refused at once; enabling again is no revocation
    assert svc.verify(tom_token).role == "mgr"
    svc.update_user(admin, 3, disabled=True)
    assert heard[-1] == (3, "disabled")
    assert _code(svc.verify, tom_token) is TOKEN_INVALID
    svc.update_user(admin, 3, disabled=False)
    assert heard[-1] == (3, "disabled") and svc.revision(3) == 2
    assert svc.verify(tom_token).role == "mgr"
    # reset password
    svc.reset_password(admin, 3, "Reset1234")
    assert heard[-1] == (3, "password")
    assert _code(svc.verify, tom_token) is TOKEN_INVALID
    # own password change
    tom = svc.verify(svc.login("tom", "Reset1234")["token"])
    svc.change_password(tom, "Reset1234", "Tom-Pass99", "Tom-Pass99")
    assert heard[-1] == (3, "password")
    tom_token = svc.login("tom", "Tom-Pass99")["token"]
    assert svc.verify(tom_token).uid == 3
    # delete
    svc.delete_user(admin, 3)
    assert heard[-1] == (3, "deleted") and svc.revision(3) == 5
    assert _code(svc.verify, tom_token) is TOKEN_INVALID
    # the admin's own password change revokes its cached token
    assert svc.verify(admin_token).uid == 1
    svc.change_password(admin, "Adm1nPass", "N3wPassword", "N3wPassword")
    assert heard[-1] == (1, "password")
    assert _code(svc.verify, admin_token) is TOKEN_INVALID
    # refused changes revoke nothing
    count = len(heard)
    assert _code(svc.update_user, admin, 1, role="tech") is FORBIDDEN
    assert _code(svc.change_password, admin, "wrong-old", "Abcdefg12", "Abcdefg12") \
        is BAD_CREDENTIALS
    assert len(heard) == count and svc.revision(1) == 2  # the first change, then this one


def test_remove_listener(env):
    svc = _svc(env)
    admin, _ = _ready_admin(svc)
    heard = []

    def listener(uid: int, reason: str) -> None:
        heard.append((uid, reason))

    svc.add_listener(listener)
    svc.add_listener(listener)  # once only
    svc.create_user(admin, "ann", "Tech1234x", "tech")
    svc.update_user(admin, 3, role="mgr")
    assert heard == [(3, "role")]
    svc.remove_listener(listener)
    svc.remove_listener(listener)  # not registered: nothing happens
    svc.update_user(admin, 3, role="tech")
    assert heard == [(3, "role")]


def test_cached_tokens_see_changes_by_another_process_after_the_cache_ttl(env):
    svc = _svc(env, token_cache_ttl=0)
    _, token = _ready_admin(svc)
    svc.verify(token)
    db, _ = env
    db.execute("UPDATE users SET role = 'mgr' WHERE id = 1")  # behind the service's back
    assert svc.verify(token).role == "mgr"
