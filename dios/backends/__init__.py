"""Device backends chosen by URL: one module per scheme.

What lives here: the registry (:mod:`dios.backends.registry`) that turns a ``[devices]``
URL into a backend, and one module per scheme that builds it: :mod:`.simulator`
(``simulator://``) and :mod:`.serial` (``serial://``, ``socket://``, ``spy://``,
``loop://``). A new backend is a new module here that calls
:func:`~dios.backends.registry.register`, plus its import below.

May import: ``dios.devices`` (the contracts), ``dios.clock``, ``simulators`` and
``drivers`` (inside the factories, so that loading the configuration imports neither):
this package and ``dios.engine`` are the only places in ``dios`` that do.
"""

from dios.backends import serial, simulator  # noqa: F401 - registers the schemes
from dios.backends.registry import (
    BackendError,
    BackendURL,
    BuildContext,
    Built,
    build,
    check,
    parse_url,
    register,
    schemes,
)

__all__ = ["BackendError", "BackendURL", "BuildContext", "Built", "build", "check",
           "parse_url", "register", "schemes"]
