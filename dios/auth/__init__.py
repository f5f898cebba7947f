"""The auth service: users and roles, scrypt password hashes, JWT tokens, permissions.

What lives here: ``roles`` (the roles, the permission table ``PERMISSIONS`` and
``require``), ``service`` (:class:`AuthService`: login, verify with its token cache and
revocation listeners, change password, user management, the guest token), ``throttle``
(:class:`LoginThrottle`: failed logins per address and per user, with lockouts;
:class:`HashLimiter`: the bound on concurrent password hashes).

May import: the standard library, PyJWT, ``dios.codes`` and ``dios.store``.
"""

from dios.auth.roles import GUEST, PERMISSIONS, ROLES, Principal, allowed, require
from dios.auth.service import AuthService, hash_password, verify_password
from dios.auth.throttle import HashLimiter, LoginThrottle

__all__ = ["GUEST", "PERMISSIONS", "ROLES", "AuthService", "HashLimiter", "LoginThrottle",
           "Principal", "allowed", "hash_password", "require", "verify_password"]
