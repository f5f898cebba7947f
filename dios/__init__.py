"""DIOS: the engine of a digital radiography console.

What lives here: the device URI bus (``bus``, ``events``, ``messages``, ``uri``, ``fsm``,
``clock``, ``codes``), device logic and backend contracts (``devices``), the exposure
workflow (``workflow``), engine assembly and configuration (``engine``, ``config``), the
console services (``auth``, ``catalog``, ``study``, ``resource``, ``task``, ``store``,
``dicom``) and the thin RPC shim (``shim``) with the ``dios`` command line (``cli``).

May import: ``processing`` (the image pipeline), ``native`` through ``processing``, and
``simulators``/``drivers`` only in ``engine`` where backends are plugged in.
"""

__version__ = "0.1.0"
