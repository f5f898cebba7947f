"""DIOS: the engine of a digital radiography console.

What lives here: the device URI bus and its vocabulary (``bus``, ``events``, ``messages``,
``topics``, ``uri``, ``fsm``, ``clock``, ``codes``), device logic, backend contracts and
the X-ray enable line (``devices``), backends chosen by URL (``backends``), engine
assembly and configuration (``engine``, ``config``), the exposure lifecycle
(``acquisition``), the console services (``auth``, ``catalog``, ``study``, ``resource``,
``task``, ``store``, ``dicom``) and the thin RPC shim (``shim``) with the ``dios`` command
line (``cli``, ``serve``).

May import: ``processing`` (the image pipeline), ``native`` through ``processing``, and
``simulators``/``drivers`` only in ``backends`` and ``engine`` where backends are plugged
in. The layers are import contracts in ``.importlinter`` (``make lint``).
"""

__version__ = "0.1.0"
