"""Compiled (Cython) kernels of the DIOS engine.

What lives here: private ``_*.pyx`` kernels built by ``setup.py`` at install time, and
this module, which imports them and fails loudly when they are missing. Callers use
the validating wrappers in ``processing/``; nothing here checks its input.

May import: numpy only; none of the project's packages (contract ``native-leaf`` in
``.importlinter``, checked by ``make lint``). Of the project's packages only
``processing`` imports it.
"""

from __future__ import annotations

_MISSING = (
    "DIOS compiled core is missing ({name}: {err}). Reinstall the engine with "
    "`pip install -e .` (or `make install`) on a machine with a C compiler; "
    "there is deliberately no pure-Python fallback."
)

try:
    from native import _lut  # noqa: F401
except ImportError as _err:  # pragma: no cover - only on a broken install
    raise ImportError(_MISSING.format(name="native._lut", err=_err)) from _err


def check() -> list[str]:
    """Return the names of the compiled kernel modules, raising if any is missing."""
    import importlib
    from pathlib import Path

    names = sorted(
        {Path(p).stem for p in (Path(__file__).parent).glob("_*.pyx")}
    )
    for name in names:
        try:
            importlib.import_module(f"native.{name}")
        except ImportError as err:
            raise ImportError(_MISSING.format(name=f"native.{name}", err=err)) from err
    return names
