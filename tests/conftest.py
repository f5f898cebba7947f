"""Shared fixtures. Peer fixtures (real DICOM and database servers) install and start
their peer on loopback and stop it afterwards; see tests/peers.py."""

from __future__ import annotations

import os

# Fast, deterministic numba behaviour in tests (see shared performance notes).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

pytest_plugins = ["tests.fixtures_dicom", "tests.fixtures_postgres"]
