"""Installing real peers (Debian packages) for the tests that need them.

A test that needs a real peer (dicom3tools, dcmtk, Orthanc, PostgreSQL) asks for it with
:func:`ensure_debian_packages`. Missing programs are installed with apt-get (the test
machine is a fresh Debian where we are root). If that is impossible the test FAILS with a
loud message: a peer test is never skipped silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import pytest

_lock = threading.Lock()
_updated = False


def _banner(msg: str) -> None:
    line = "!" * 78
    print(f"\n{line}\n{msg}\n{line}", file=sys.stderr, flush=True)


def ensure_debian_packages(packages: list[str], programs: list[str]) -> dict[str, str]:
    """Make sure every program in ``programs`` is on PATH, installing ``packages`` if not.

    Returns {program: path}. Calls ``pytest.fail`` (never skip) when they cannot be had.
    """
    global _updated
    with _lock:
        missing = [p for p in programs if shutil.which(p) is None and not os.path.exists(p)]
        if missing:
            if os.geteuid() != 0:
                _banner(f"PEER MISSING: {missing} and not root, cannot apt-get install {packages}")
                pytest.fail(f"peer programs {missing} missing; install Debian packages {packages}")
            print(f"\n[peers] installing Debian packages {packages} for {missing} ...",
                  file=sys.stderr, flush=True)
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            try:
                if not _updated:
                    subprocess.run(["apt-get", "update", "-q"], check=True, env=env,
                                   stdout=subprocess.DEVNULL, timeout=600)
                    _updated = True
                subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                *packages], check=True, env=env, stdout=subprocess.DEVNULL,
                               timeout=900)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
                _banner(f"PEER INSTALL FAILED: apt-get install {packages}: {exc}")
                pytest.fail(f"could not install peer packages {packages}: {exc}")
        found = {p: (shutil.which(p) or p) for p in programs}
        still = [p for p, path in found.items() if not os.path.exists(path)]
        if still:
            _banner(f"PEER MISSING after install: {still}")
            pytest.fail(f"peer programs {still} missing after installing {packages}")
        return found
