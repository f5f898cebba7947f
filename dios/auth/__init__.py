"""The auth service: users and roles, scrypt password hashes, JWT tokens, permissions.

What lives here: ``roles`` (the roles, the permission table ``PERMISSIONS`` and
``require``), ``service`` (:class:`AuthService`: login, verify, change password, user
management, the guest token).

May import: the standard library, PyJWT, ``dios.codes`` and ``dios.store``.
"""

from dios.auth.roles import GUEST, PERMISSIONS, ROLES, Principal, allowed, require
from dios.auth.service import AuthService, hash_password, verify_password

__all__ = ["GUEST", "PERMISSIONS", "ROLES", "AuthService", "Principal", "allowed",
           "hash_password", "require", "verify_password"]
