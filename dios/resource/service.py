"""The resource service: software info, role list, option lists, view icons.

``software_info`` answers in the seed's shape: the detector (``FPD``) and generator
(``GEN``) drivers in use, a fresh guest token, the languages, the product, one entry per
engine service with ``build``/``desc``/``submodule``/``version``, and ``sn``, a serial
number generated once per install and kept in ``<data_dir>/serial-number``.

A service's ``version`` is the package version followed by ``-g`` and the first seven hex
digits of a SHA-1 over the service's source files; ``build`` is the newest modification
time of those files; ``submodule`` lists ``<hash>[<name>]`` for the RPC operation table
(``rpc_idl``) and, for ``imgProc``, for each processing stage.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import secrets
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dios.auth.roles import ROLES
from dios.codes import INVALID_FIELD, NOT_FOUND, DiosError
from dios.store.files import create_once

if TYPE_CHECKING:
    from dios.auth.service import AuthService
    from dios.catalog.service import CatalogService

__all__ = ["OPTIONS", "ResourceService"]

SERIAL_FILE = "serial-number"
LANGUAGES = ["en", "zh"]
PRODUCTS = ("DROS", "VETDROS")
_ROOT = Path(__file__).resolve().parents[2]

#: service name -> (source directory relative to the project root, description)
SERVICES: dict[str, tuple[str, str]] = {
    "auth": ("dios/auth", "Authentication service"),
    "dcmtk": ("dios/dicom", "DICOM service"),
    "imgProc": ("processing", "Image processing service"),
    "protocol": ("dios/catalog", "Protocol catalog service"),
    "resource": ("dios/resource", "Resource service"),
    "study": ("dios/study", "Study service"),
    "task": ("dios/task", "Task service"),
}
#: imgProc submodule -> the processing sources it is made of
IMGPROC_SUBMODULES: dict[str, tuple[str, ...]] = {
    "auto_wwwl": ("processing/window.py", "processing/lut.py"),
    "collimator_circle": ("processing/collimator.py", "processing/_collimator_kernels.py"),
    "collimator_rect": ("processing/collimator.py", "processing/_collimator_kernels.py"),
    "enhance": ("processing/enhance.py",),
}
RPC_IDL = ("dios/shim/api.py", "dios/shim/dispatch.py")

# -- option lists: value -> (en, zh) ------------------------------------------------------
_SEX_HUMAN = {"M": ("Male", "男"), "F": ("Female", "女"), "O": ("Other", "其他"),
              "U": ("Unknown", "未知")}
#: the seed's VETDROS list, exactly (U is accepted by validation but not offered there)
_SEX_VET = {"M": ("Male", "男"), "F": ("Female", "女"), "O": ("Other", "其他"),
            "CM": ("CM", "去势雄性"), "SF": ("SF", "绝育雌性")}

OPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "patient_size": {"Large": ("Large", "大"), "Medium": ("Medium", "中"),
                     "Small": ("Small", "小"), "Paediatric": ("Paediatric", "儿童")},
    "study_type": {"Normal": ("Normal", "普通"), "Emergency": ("Emergency", "紧急")},
    "sex_neutered": {"ALTERED": ("Altered", "绝育"), "UNALTERED": ("Unaltered", "未绝育")},
    "pregnancy_status": {"0001": ("Not pregnant", "未怀孕"), "0002": ("Possibly pregnant", "可能怀孕"),
                         "0003": ("Definitely pregnant", "确定怀孕"), "0004": ("Unknown", "未知")},
    "modality": {"DX": ("DX", "DX"), "CR": ("CR", "CR")},
    "study_status": {"Arrived": ("Arrived", "已登记"), "InProgress": ("In progress", "检查中"),
                     "Completed": ("Completed", "已完成")},
    "study_lock": {"Unlocked": ("Unlocked", "未锁定"), "Locked": ("Locked", "已锁定")},
    "expose_status": {"Unexposed": ("Unexposed", "未曝光"), "Exposing": ("Exposing", "曝光中"),
                      "Exposed": ("Exposed", "已曝光")},
    "judged_status": {"NotJudged": ("Not judged", "未评判"), "Accepted": ("Accepted", "接受"),
                      "Rejected": ("Rejected", "拒绝")},
    "send_status": {"Unsent": ("Unsent", "未发送"), "Sending": ("Sending", "发送中"),
                    "Sent": ("Sent", "已发送"), "SendFailed": ("Send failed", "发送失败")},
    "storage_status": {"NotSaved": ("Not saved", "未保存"), "Saved": ("Saved", "已保存")},
    "role": {"service": ("Service", "维修"), "admin": ("Administrator", "管理员"),
             "mgr": ("Manager", "主管"), "tech": ("Technician", "技师")},
    "language": {"en": ("English", "English"), "zh": ("中文", "中文")},
    "product": {"DROS": ("DROS", "DROS"), "VETDROS": ("VETDROS", "VETDROS")},
}


def _sources(rel: str | tuple[str, ...]) -> list[Path]:
    paths: list[Path] = []
    for r in (rel,) if isinstance(rel, str) else rel:
        p = _ROOT / r
        if p.is_dir():
            paths += sorted(x for x in p.rglob("*") if x.suffix in (".py", ".pyx", ".json")
                            and "__pycache__" not in x.parts)
        elif p.is_file():
            paths.append(p)
    return paths


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    for p in paths:
        h.update(p.relative_to(_ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:8]


def _build_time(paths: list[Path]) -> str:
    newest = max((p.stat().st_mtime for p in paths), default=0.0)
    return datetime.fromtimestamp(newest).strftime("%Y-%m-%d %H:%M:%S")


def package_version() -> str:
    """The installed engine's version (``0.0.0+unknown`` when not installed)."""
    try:
        return importlib.metadata.version("dios-engine")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class ResourceService:
    """Software info, roles, option lists and view icons.

    Parameters
    ----------
    data_dir : path
        Where the per-install serial number is kept.
    auth : AuthService
        Issues the guest token.
    catalog : CatalogService, optional
        Serves the view icons (``view_icon``).
    product : str
        ``DROS`` or ``VETDROS``.
    fpd, gen : str
        The detector and generator drivers in use (e.g. ``Simulator``).
    """

    def __init__(self, data_dir: str | Path, auth: AuthService,
                 catalog: CatalogService | None = None, *,
                 product: str = "DROS", fpd: str = "Simulator", gen: str = "Simulator") -> None:
        if product not in PRODUCTS:
            raise ValueError(f"product must be one of {PRODUCTS}")
        self.data_dir = Path(data_dir)
        self.auth = auth
        self.catalog = catalog
        self.product = product
        self.fpd = fpd
        self.gen = gen
        raw, _ = create_once(self.data_dir / SERIAL_FILE,
                             "-".join(secrets.token_hex(4) for _ in range(4)).encode())
        self.sn = raw.decode().strip()
        self._servers = self._describe_servers()

    @staticmethod
    def _describe_servers() -> dict[str, dict[str, Any]]:
        version = package_version()
        idl = f"{_digest(_sources(RPC_IDL))}[rpc_idl]"
        out: dict[str, dict[str, Any]] = {}
        for name, (rel, desc) in SERVICES.items():
            files = _sources(rel)
            submodules = []
            if name == "imgProc":
                submodules = [f"{_digest(_sources(src))}[{sub}]"
                              for sub, src in IMGPROC_SUBMODULES.items()]
            out[name] = {"build": _build_time(files), "desc": desc,
                         "submodule": [*submodules, idl],
                         "version": f"{version}-g{_digest(files)[:7]}"}
        return out

    def software_info(self, product: str | None = None) -> dict[str, Any]:
        """The seed's software-info reply (with a fresh guest token)."""
        return {"FPD": self.fpd, "GEN": self.gen, "guest": self.auth.guest_token(),
                "language": list(LANGUAGES), "product": product or self.product,
                "server": {k: {**v, "submodule": list(v["submodule"])}
                           for k, v in self._servers.items()},
                "sn": self.sn}

    @staticmethod
    def roles() -> list[str]:
        """The seed's role list."""
        return list(ROLES)

    def options(self, kind: str, language: str = "en", product: str | None = None) -> dict[str, Any]:
        """``dr.resource.OptionReply`` for one enumeration, texts in ``language``.

        ``kind``: ``sex`` (M/F/O/U, plus CM/SF for VETDROS) or one of :data:`OPTIONS`.
        """
        if not isinstance(kind, str) or not kind:
            raise DiosError(INVALID_FIELD, "kind must name an option list", field="kind")
        product = product or self.product
        if kind == "sex":
            table = _SEX_VET if product == "VETDROS" else _SEX_HUMAN
        elif kind in OPTIONS:
            table = OPTIONS[kind]
        else:
            raise DiosError(NOT_FOUND, f"option list {kind!r}; known: sex, "
                            f"{', '.join(OPTIONS)}", field="kind")
        idx = 1 if isinstance(language, str) and language.startswith("zh") else 0
        return {"@type": "type.googleapis.com/dr.resource.OptionReply",
                "option": [{"text": texts[idx], "value": value} for value, texts in table.items()]}

    @staticmethod
    def option_kinds() -> list[str]:
        """Every option list name."""
        return ["sex", *OPTIONS]

    def view_icon(self, name: str) -> tuple[bytes, str]:
        """The PNG icon of a view, from the catalog: ``(bytes, "image/png")``.

        ``name`` is an icon name as the views carry it (``view_icon_name``,
        ``view_big_icon_name``, e.g. ``/Image/Position/Human/skull_ap.png``) or a view id.
        """
        if self.catalog is None:
            raise DiosError(NOT_FOUND, "no catalog to serve view icons")
        if not isinstance(name, str) or not name or len(name) > 512:
            raise DiosError(INVALID_FIELD, "name must be an icon name or a view id", field="name")
        if "/" in name or name.endswith(".png"):
            png = self.catalog.icon_by_name(name)
        else:
            png = self.catalog.view_icon(name)
        return bytes(png), "image/png"
