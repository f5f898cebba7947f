"""Roles, the permission table and the check every service call goes through.

Roles (the seed's role list, most privileged first) and the read-only ``guest``:

* ``service`` - the vendor's service engineer: everything a site needs to keep the
  system running, including raw device commands and calibration, but not user
  management (that belongs to the site's ``admin``).
* ``admin`` - the site administrator: manages users, configuration and the catalog.
* ``mgr`` - the department manager: deletes and locks studies, edits the catalog.
* ``tech`` - the radiographer: registers, exposes, judges and completes studies.
* ``guest`` - the principal of the guest token (software-info reply, handed out without
  authentication): reads the resource lists, the catalog and the task status only, never
  patient data (no studies, no images).

Permission table (``PERMISSIONS``; x = allowed):

======================  =======  =====  ===  ====  =====
permission              service  admin  mgr  tech  guest
======================  =======  =====  ===  ====  =====
``auth.self``           x        x      x    x
``user.manage``                  x
``system.config``       x        x
``resource.read``       x        x      x    x     x
``catalog.read``        x        x      x    x     x
``catalog.write``       x        x      x
``study.read``          x        x      x    x
``study.write``         x        x      x    x
``study.delete``        x        x      x
``study.lock``          x        x      x
``image.read``          x        x      x    x
``image.write``         x        x      x    x
``image.delete``        x        x      x
``task.read``           x        x      x    x     x
``event.images``        x        x      x    x
``device.action``       x        x      x    x
``device.command``      x
``device.calibrate``    x
``dicom.config``        x        x
``dicom.send``          x        x      x    x
======================  =======  =====  ===  ====  =====

``auth.self``: change one's own password. ``study.write``: register, update, append
views, retake, set status. ``image.write``: judge, upload a PNG. ``device.action``:
the seed's device action (select view, prepare, expose). ``device.command``: raw device
commands (``deviceUri``/``reqName``/``reqParam``). ``task.read``: global status and the
event stream. ``event.images``: raw frames and patient-bearing events on event streams
(subscriptions); checked when subscribing and again when the principal's role changes.
``dicom.config``: the DICOM nodes (create, change, delete) and their "test connection"
(C-ECHO). ``dicom.send``: list the nodes, send or resend images to a storage node, read
the outbox and each image's results.

A principal whose password must still be changed (the first admin login) may only use
``auth.self`` and the read permissions of its role (``*.read`` and ``event.images``) until
it does: everything else is refused with ``PASSWORD_CHANGE_REQUIRED``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dios.codes import FORBIDDEN, PASSWORD_CHANGE_REQUIRED, TOKEN_INVALID, DiosError

__all__ = ["GUEST", "PERMISSIONS", "ROLES", "Principal", "allowed", "require"]

#: The assignable roles, in the order of the seed's role list.
ROLES: tuple[str, ...] = ("service", "admin", "mgr", "tech")
#: The role of the guest token's principal (not assignable to users).
GUEST = "guest"

_ALL = frozenset(ROLES)
#: Reads the guest token may do too (never patient data).
_READ = _ALL | {GUEST}

PERMISSIONS: dict[str, frozenset[str]] = {
    "auth.self": _ALL,
    "user.manage": frozenset({"admin"}),
    "system.config": frozenset({"service", "admin"}),
    "resource.read": _READ,
    "catalog.read": _READ,
    "catalog.write": frozenset({"service", "admin", "mgr"}),
    "study.read": _ALL,
    "study.write": _ALL,
    "study.delete": frozenset({"service", "admin", "mgr"}),
    "study.lock": frozenset({"service", "admin", "mgr"}),
    "image.read": _ALL,
    "image.write": _ALL,
    "image.delete": frozenset({"service", "admin", "mgr"}),
    "task.read": _READ,
    "event.images": _ALL,
    "device.action": _ALL,
    "device.command": frozenset({"service"}),
    "device.calibrate": frozenset({"service"}),
    "dicom.config": frozenset({"service", "admin"}),
    "dicom.send": _ALL,
}

#: What a principal that must change its password may still do: its own password and
#: the read permissions its role holds.
_BEFORE_PASSWORD_CHANGE = frozenset(
    p for p in PERMISSIONS if p in ("auth.self", "event.images") or p.endswith(".read"))


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified identity behind a token.

    ``expires`` is the token's ``exp`` claim (seconds since the epoch; 0.0 when the
    principal was not made from a token); it is not part of the identity, so two
    principals of the same user compare equal whatever their tokens' expiry.
    ``get`` makes it readable like the token's claims (``id``/``uid``, ``name``, ``role``,
    ``exp``).
    """

    uid: int
    name: str
    role: str
    must_change_password: bool = False
    expires: float = field(default=0.0, compare=False)

    def get(self, key: str, default: Any = None) -> Any:
        """Claim-style access: ``id`` or ``uid``, ``name``, ``role``, ``exp``."""
        if key in ("id", "uid"):
            return self.uid
        if key in ("exp", "expires"):
            return self.expires
        if key in ("name", "role", "must_change_password"):
            return getattr(self, key)
        return default

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, KeyError)
        if value is KeyError:
            raise KeyError(key)
        return value


def allowed(role: str, permission: str) -> bool:
    """True when ``role`` holds ``permission`` (unknown permissions are never allowed)."""
    return role in PERMISSIONS.get(permission, frozenset())


def require(principal: Principal | None, permission: str) -> None:
    """Raise unless ``principal`` may use ``permission``.

    Raises
    ------
    DiosError
        ``TOKEN_INVALID`` for no principal, ``FORBIDDEN`` when the role lacks the
        permission (or the permission is unknown), ``PASSWORD_CHANGE_REQUIRED`` when the
        principal must change its password first.
    """
    if not isinstance(principal, Principal):
        raise DiosError(TOKEN_INVALID, "no verified principal")
    if permission not in PERMISSIONS:
        raise DiosError(FORBIDDEN, f"unknown permission {permission!r}", permission=permission)
    if not allowed(principal.role, permission):
        raise DiosError(FORBIDDEN, f"role {principal.role} may not {permission}",
                        permission=permission, role=principal.role)
    if principal.must_change_password and permission not in _BEFORE_PASSWORD_CHANGE:
        raise DiosError(PASSWORD_CHANGE_REQUIRED, f"{principal.name} must change the password",
                        permission=permission)
