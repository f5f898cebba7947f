"""Fuzz the live HTTP API from its own OpenAPI document: no request may get a 5xx.

schemathesis reads ``/api/v1/openapi.json`` from a real console on loopback and generates
requests for every operation, valid ones and ones that break the schema (wrong types,
missing fields, odd strings, huge numbers), each sent with a token of the least
privileged role that may call the operation, so that the requests reach the services and
not only the permission check. schemathesis' check ``not_a_server_error`` runs on every
reply; failures are collected (operation, status, reply, a curl line to replay) and
reported together.

Every envelope's description and solution must also be free of Python internals (type
and exception names).

The run is derandomized (the same requests every time) and bounded: about
``DIOS_FUZZ_REQUESTS`` requests in all (default 2,000, so that it fits the suite);
``make fuzz`` runs 20,000. The fuzzer may change users: the accounts whose tokens it uses
are never the target of a user operation (their ids are swapped for a spare user's).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from dios.auth.roles import PERMISSIONS
from tests.console_helpers import Api, setup_users, start_console

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

REQUESTS = int(os.environ.get("DIOS_FUZZ_REQUESTS", "2000"))
#: words that would show Python internals in an envelope's description or solution
PYTHON_WORDS = re.compile(r"\b(dict|str|int|float|bytes|tuple|NoneType|Traceback|"
                          r"[A-Z][A-Za-z]*(Error|Exception))\b")
ROLE_ORDER = ("service", "admin", "mgr", "tech", "guest")
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Iterator[Any]:
    c = start_console(tmp_path_factory.mktemp("fuzz"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def apis(console) -> Iterator[dict[str, Api]]:
    apis = setup_users(console)
    yield apis
    for a in apis.values():
        a.close()


def role_for(permission: str | None) -> str:
    if permission is None:
        return "guest"
    return next(r for r in ROLE_ORDER if r in PERMISSIONS.get(permission, ()))


def permissions_by_route() -> dict[tuple[str, str], str | None]:
    """(METHOD, path below /api/v1) -> the permission the operation needs."""
    from dios.shim.api import operations

    return {(op.method, re.sub(r"{(\w+):\w+}", r"{\1}", op.path)): op.permission
            for op in operations()}


def python_words(response: Any) -> str:
    """The description and solution of an envelope reply when they name Python internals."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    text = f"{body.get('description', '')} | {body.get('solution', '')}"
    return text[:300] if PYTHON_WORDS.search(text) else ""


def test_no_server_error_for_any_generated_request(console, apis):
    base = f"http://127.0.0.1:{console.http_port}"
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json", timeout=60)
    permissions = permissions_by_route()
    admin = apis["admin"]
    admin.ok("POST", "/auth/users", json={"username": "spare1", "password": "Temp-Pass-123",
                                                  "role": "tech"})
    users = admin.ok("GET", "/auth/users")["users"]
    protected = {u["uid"] for u in users if u["name"] in ("admin", "service1", "mgr1", "tech1")}
    assert len(protected) == 4, users
    spare_uid = next(u["uid"] for u in users if u["name"] == "spare1")

    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 40, "the document lists fewer operations than the API has"
    per_run = max(1, math.ceil(REQUESTS / (len(ops) * len(MODES))))
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    wordy: list[str] = []
    session = requests.Session()

    def send(case: Any) -> None:
        label = f"{case.operation.method.upper()} {case.operation.path}"
        route = (case.operation.method.upper(),
                 case.operation.full_path.removeprefix("/api/v1"))
        token = apis[role_for(permissions.get(route))].token
        if case.path_parameters and case.path_parameters.get("uid") in protected:
            case.path_parameters["uid"] = spare_uid
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = case.call(base_url=base, session=session, headers=headers, timeout=120)
        sent[label] += 1
        statuses[response.status_code] += 1
        words = python_words(response)
        if words:
            wordy.append(f"{label}: {response.status_code} {words!r}")
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except Exception as exc:  # noqa: BLE001 - every failure is collected and reported
            failures.append(f"{label}: {response.status_code} {response.text[:300]!r}\n"
                            f"  {type(exc).__name__}: {str(exc)[:300]}\n"
                            f"  {case.as_curl_command(headers=headers)[:600]}")

    for op in ops:
        for mode in MODES:
            @settings(max_examples=per_run, derandomize=True, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                send(case)

            run()
    session.close()
    total = sum(sent.values())
    print(f"\nfuzz: {total} requests over {len(sent)} operations; statuses {dict(sorted(statuses.items()))}")
    assert total >= min(REQUESTS, len(ops) * len(MODES)) * 0.5, (total, sent)
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:40])
    assert not wordy, "descriptions naming Python internals:\n" + "\n".join(sorted(set(wordy))[:40])
