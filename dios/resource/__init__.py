"""The resource service: software info (drivers, versions, serial, guest token), the role
list, option lists of the enumerations (en/zh) and view icons (from the catalog).

May import: the standard library, ``dios.codes``, ``dios.store`` and ``dios.auth``; the
auth and catalog services are passed in. Never the shim, the bus or devices.
"""

from dios.resource.service import OPTIONS, ResourceService

__all__ = ["OPTIONS", "ResourceService"]
