"""Real DICOM storage peers for the tests: Orthanc (Debian ``orthanc``) and dcmtk's ``storescp``.

Both are installed with apt-get when missing (:func:`tests.peers.ensure_debian_packages`;
a test that cannot have them FAILS, it is never skipped), started on free loopback ports
with their configuration and storage in a temporary folder, waited for (Orthanc: its REST
``/system``; storescp: a C-ECHO by ``echoscu``) and stopped afterwards. Orthanc can be
stopped and started again on the same ports with the same storage ("the PACS is down").

Orthanc only takes associations from the AE titles listed in ``calling`` (from 127.0.0.1)
and only when called by its own AE title (``DicomCheckCalledAet``), so a wrong AE title
on either side is rejected, as at a hospital.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.console_helpers import wait_until
from tests.peers import ensure_debian_packages

__all__ = ["OrthancPeer", "StorescpPeer", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen | None, timeout: float = 60.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class OrthancPeer:
    """An Orthanc on loopback ports; ``calling``: the AE titles allowed to call it."""

    def __init__(self, root: Path, calling: list[str], ae_title: str = "ORTHANC") -> None:
        self.program = ensure_debian_packages(["orthanc"], ["Orthanc"])["Orthanc"]
        self.root = Path(root)
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen | None = None
        for d in ("db", "logs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "DIOSTEST", "StorageDirectory": str(self.root / "db"),
            "IndexDirectory": str(self.root / "db"), "StorageCompression": False,
            "Plugins": [], "HttpServerEnabled": True, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "SslEnabled": False,
            "DicomServerEnabled": True, "DicomAet": ae_title, "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True, "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False, "DicomAlwaysAllowMove": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {aet.lower(): {"AET": aet, "Host": "127.0.0.1", "Port": 1}
                                for aet in calling},
            "UnknownSopClassAccepted": False, "OverwriteInstances": False, "SaveJobs": False,
        }
        self.config_path = self.root / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> OrthancPeer:
        log = open(self.root / "logs" / "orthanc.stdout", "ab")  # noqa: SIM115 - kept by Popen
        self.proc = subprocess.Popen([self.program, str(self.config_path),
                                      f"--logdir={self.root / 'logs'}"],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"Orthanc exited with {self.proc.returncode}; see "
                                     f"{self.root / 'logs'}")
            try:
                return httpx.get(f"{self.url}/system", timeout=5, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 60, "Orthanc to answer on its REST port", interval=0.05)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.url}{path}", timeout=30, trust_env=False)
        r.raise_for_status()
        return r.json() if "json" in r.headers.get("content-type", "") else r.content

    def sop_uids(self) -> dict[str, str]:
        """SOP Instance UID -> Orthanc's instance id, of every instance it holds."""
        out = {}
        for inst in self.get("/instances?expand"):
            out[inst["MainDicomTags"]["SOPInstanceUID"]] = inst["ID"]
        return out

    def instance_file(self, instance_id: str, dest: Path) -> Path:
        dest.write_bytes(self.get(f"/instances/{instance_id}/file"))
        return dest


class StorescpPeer:
    """dcmtk's storescp on a loopback port, writing every received file to ``root/in``."""

    def __init__(self, root: Path, ae_title: str = "STORESCP") -> None:
        tools = ensure_debian_packages(["dcmtk"], ["storescp", "echoscu"])
        self.program, self.echoscu = tools["storescp"], tools["echoscu"]
        self.root = Path(root)
        self.ae_title = ae_title
        self.port = free_port()
        self.out = self.root / "in"
        self.out.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def start(self) -> StorescpPeer:
        log = open(self.root / "storescp.log", "ab")  # noqa: SIM115 - kept by Popen
        self.proc = subprocess.Popen([self.program, "-aet", self.ae_title, "-od", str(self.out),
                                      "-ta", "30", "-td", "60", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"storescp exited with {self.proc.returncode}")
            return subprocess.run([self.echoscu, "-aec", self.ae_title, "127.0.0.1",
                                   str(self.port)], capture_output=True,
                                  timeout=60).returncode == 0

        wait_until(up, 60, "storescp to answer a C-ECHO", interval=0.05)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def files(self) -> dict[str, Path]:
        """SOP Instance UID -> received file (storescp names files <modality>.<uid>)."""
        out = {}
        for path in self.out.iterdir():
            if path.is_file() and "." in path.name and not path.name.startswith("."):
                out[path.name.split(".", 1)[1]] = path
        return out

