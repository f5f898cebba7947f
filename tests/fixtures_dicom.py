"""The dciodvfy peer (Debian's dicom3tools): a fixture that provides the program, and a check.

``dciodvfy`` verifies a DICOM file against its IOD. The fixture installs dicom3tools with
apt-get when the program is missing and fails loudly when it cannot (see
:func:`tests.peers.ensure_debian_packages`); a DICOM conformance test is never skipped.

Facts (shared notes, dicom-peers.md): all output goes to stderr; a clean file prints the
IOD name only (warnings allowed). The exit code is not enough on its own: some errors (e.g.
an empty AnatomicRegionSequence next to a BodyPartExamined) print ``Error -`` lines with
exit code 0, so :func:`assert_dciodvfy_clean` checks both.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.peers import ensure_debian_packages

__all__ = ["assert_dciodvfy_clean", "dciodvfy", "dciodvfy_path", "run_dciodvfy"]


def dciodvfy_path() -> str:
    """The dciodvfy program, installed with apt-get if missing (fails the test otherwise)."""
    return ensure_debian_packages(["dicom3tools"], ["dciodvfy"])["dciodvfy"]


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """Path of the ``dciodvfy`` program (installs dicom3tools when missing)."""
    return dciodvfy_path()


def run_dciodvfy(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Run dciodvfy on ``path``; return (exit code, combined output)."""
    program = shutil.which("dciodvfy") or dciodvfy_path()
    proc = subprocess.run([program, os.fspath(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    return proc.returncode, (proc.stderr or "") + (proc.stdout or "")


def assert_dciodvfy_clean(path: str | os.PathLike[str]) -> str:
    """Assert that dciodvfy reports no errors for ``path``; return its output.

    Fails (showing the whole output) when the exit code is not 0 or any line starts with
    ``Error``. Warnings are allowed.
    """
    code, output = run_dciodvfy(path)
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert code == 0 and not errors, (
        f"dciodvfy found errors in {os.fspath(path)} (exit code {code}):\n{output}")
    return output
