"""The task service: device actions and commands, image selection, exposure, files.

A thin facade over :class:`dios.acquisition.lifecycle.AcquisitionLifecycle`, which owns
the exposure of study images (plan -> expose -> frame -> pipeline -> DICOM -> store, one
outcome per exposure) and announces it as events (:mod:`dios.topics`). This module adds
what the console API needs around it: the permission each device command needs, the
argument checks (UIDs, client file names, uploads), PNG upload as a secondary capture
image, and reading stored files and previews back.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dios import topics
from dios.acquisition.context import technique_from_ep
from dios.acquisition.lifecycle import AcquisitionLifecycle, Room, check
from dios.acquisition.sink import StoredFrame, private
from dios.codes import (
    BAD_FILE_NAME,
    INVALID_FIELD,
    INVALID_TRANSITION,
    PAYLOAD_TOO_LARGE,
    STORAGE_ERROR,
    STUDY_LOCKED,
    UNSUPPORTED_MEDIA,
    DiosError,
)
from dios.messages import Event, EventKind, Reply, Request
from dios.store.files import PRIVATE_DIR, make_private
from dios.uids import UidFactory, is_valid_uid
from dios.uri import GENERATOR, parse

if TYPE_CHECKING:
    from concurrent.futures import Future

    from dios.catalog.service import CatalogService
    from dios.study.service import StudyService

__all__ = ["TaskService", "check_file_name", "check_uid", "command_permission",
           "technique_from_ep"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Commands a radiographer sends while operating the console (``device.action``);
#: calibration needs ``device.calibrate``; anything else is a raw service command.
_OPERATIONAL = re.compile(
    r"^(?:(?:Get|Set|Inc|Dec)Param_\w+|Prepare|Expose|Abort|ResetError|GetStatus|GetLimits)$")
_CALIBRATION = re.compile(r"^Calibrate\w*$")


def command_permission(req_name: str) -> str:
    """The permission a device command needs: ``device.action`` for the console's
    operational commands, ``device.calibrate`` for calibration, else ``device.command``."""
    if _OPERATIONAL.match(req_name):
        return "device.action"
    if _CALIBRATION.match(req_name):
        return "device.calibrate"
    return "device.command"


def check_uid(value: object, name: str = "instance_uid") -> str:
    """A DICOM UID argument; INVALID_FIELD otherwise (this also stops path traversal)."""
    if not is_valid_uid(value):
        raise DiosError(INVALID_FIELD, f"{name} is not a DICOM UID", field=name)
    return str(value)


def check_file_name(name: object) -> str:
    """A client-supplied file name: a plain name, no directories; BAD_FILE_NAME otherwise."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise DiosError(BAD_FILE_NAME, "empty or too long")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", "..") or ".." in name:
        raise DiosError(BAD_FILE_NAME, repr(name)[:80])
    return name


class TaskService:
    """Device tasks and the acquisition of study images: a facade over the lifecycle.

    Parameters
    ----------
    engine : dios.engine.Engine
        The running engine (``bus``, ``hub``, ``generator``, ``detector``, X-ray enable).
    study : dios.study.service.StudyService
        Image lookup and the image transitions.
    catalog : dios.catalog.service.CatalogService
        Views (processing info) and tech params.
    data_dir : path
        Images go to ``data_dir/images/<study uid>/``, previews to ``data_dir/previews/``;
        the study records their paths relative to ``data_dir`` (:meth:`image_path` gives
        the absolute path).
    work_station_id : int
        The work station whose APR techniques apply.
    uid_root : str
        Organisation root for the UIDs of uploaded (secondary capture) images.
    """

    def __init__(self, engine: Room, study: StudyService, catalog: CatalogService,
                 data_dir: str | os.PathLike, work_station_id: int = 1, uid_root: str = "2.25",
                 exposure_timeout: float = 60.0, max_upload: int = 32 << 20,
                 station_name: str = "DIOS", institution: str = "") -> None:
        self.engine = engine
        self.bus = engine.bus
        self.hub = engine.hub
        self.study = study
        self.catalog = catalog
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / "images"
        self.previews_dir = self.data_dir / "previews"
        make_private(self.data_dir, ("images", "previews"))
        self.uids = UidFactory(uid_root)
        self.max_upload = max_upload
        self.station_name = station_name
        self.lifecycle = AcquisitionLifecycle(engine, study, catalog, self.data_dir,
                                              work_station_id=work_station_id,
                                              exposure_timeout=exposure_timeout,
                                              site={"InstitutionName": institution,
                                                    "StationName": station_name})

    def close(self) -> None:
        """Stop listening to the bus."""
        self.lifecycle.close()

    # --- counters of the lifecycle (status, tests) ----------------------------------------------
    @property
    def exposures(self) -> int:
        """Exposures stored since start."""
        return self.lifecycle.stored

    @property
    def failures(self) -> int:
        return self.lifecycle.failed

    @property
    def orphan_frames(self) -> int:
        """Frames kept unassigned (no exposure in flight could take them)."""
        return self.lifecycle.unassigned

    @property
    def last_outcome(self) -> StoredFrame | None:
        """The last stored exposure (record, frame, pipeline result, context, timings)."""
        return self.lifecycle.last_stored

    @property
    def exposure_timeout(self) -> float:
        return self.lifecycle.exposure_timeout

    @exposure_timeout.setter
    def exposure_timeout(self, seconds: float) -> None:
        self.lifecycle.exposure_timeout = float(seconds)

    # --- status and device commands -----------------------------------------------------------
    def global_status(self) -> dict[str, Any]:
        """The seed's ``TaskGlobalStatus`` (with its ``@type``)."""
        return self.bus.global_status()

    def device_command(self, request: dict[str, Any]) -> Reply:
        """Send one device command (the seed's five fields) and return its reply.

        Raises the reply's own result code when the device refuses. The generator's
        ``Expose`` goes through the acquisition lifecycle: refused with ``WRONG_STATE``
        unless an image is selected and the detector armed, ``BUSY`` while the previous
        exposure is in flight or being stored. Every other command goes to its device,
        where the X-ray enable line guards the beam whatever the command's origin.
        """
        req = Request.from_mapping(request)
        parse(req.deviceUri)
        if req.deviceUri == GENERATOR and req.reqName == "Expose":
            reply, _ = self.lifecycle.expose_command(req)
            return check(reply)
        return check(self.bus.request(req))

    def submit_device_command(self, request: dict[str, Any]) -> tuple[Request, Future[Reply]] | None:
        """Queue one device command without waiting: its request and the future of its
        reply (check it with :func:`check`; on a timeout hand it to the bus's
        ``give_up``). A query of an idle device (a parameter read) is answered at once,
        on the caller's thread: the future is then already done. ``None`` for the
        generator's ``Expose``, which goes through the
        acquisition lifecycle: call :meth:`device_command` for it. For callers on an event
        loop; the X-ray enable line guards every other command as in :meth:`device_command`."""
        req = Request.from_mapping(request)
        parse(req.deviceUri)
        if req.deviceUri == GENERATOR and req.reqName == "Expose":
            return None
        return req, self.bus.submit(req, inline=True)

    def give_up_command(self, req: Request, fut: Future[Reply], waited: float) -> Reply:
        """The reply of a command from :meth:`submit_device_command` whose caller stops
        waiting: the reply if it arrived meanwhile, else ``TIMEOUT`` (see the bus)."""
        return self.bus.give_up(req, fut, waited)

    @property
    def command_timeout(self) -> float:
        """Seconds a device command may take before its requester gets ``TIMEOUT``."""
        return float(self.bus.timeout)

    def device_action(self, device_uri: str, transaction: str = "", client: str = "") -> Reply:
        """Ask a device to report itself: its status goes out as a ``state`` event."""
        parse(device_uri)
        reply = check(self.bus.request(Request(device_uri, "GetStatus", "", transaction, client)))
        self.hub.publish(Event(device_uri, EventKind.STATE, "status", str(reply.result),
                               reply.data, transaction, client))
        return reply

    # --- selection and exposure ---------------------------------------------------------------
    def select_image(self, sop: str, transaction: str = "", client: str = "task") -> dict[str, Any]:
        """Plan image ``sop`` for the next exposure and apply its APR technique; returns
        the technique the generator accepted (see :meth:`AcquisitionLifecycle.select`)."""
        return asdict(self.lifecycle.select(check_uid(sop), transaction, client))

    def deselect_image(self) -> None:
        """Cancel the selection; ``BUSY`` while an exposure is in flight or being stored."""
        self.lifecycle.deselect()

    def disarm(self) -> None:
        """Cancel the selection if there is one (no error while nothing is planned)."""
        self.lifecycle.deselect()

    @property
    def armed(self) -> str | None:
        """The SOP instance UID the next exposure fills, if any."""
        return self.lifecycle.planned

    def expose(self, sop: str, transaction: str = "", client: str = "task",
               timeout: float | None = None,
               override: dict[str, Any] | None = None) -> dict[str, Any]:
        """Select ``sop``, prepare, expose and wait for the exposure's one outcome: the
        stored image, or its failure raised (see :meth:`AcquisitionLifecycle.run`)."""
        return self.lifecycle.run(check_uid(sop), transaction, client, timeout, override)

    # --- uploads and downloads ------------------------------------------------------------------
    def upload_png(self, sop: str, data: bytes, filename: str = "") -> dict[str, Any]:
        """Turn a PNG into the DICOM file of image ``sop``; reply the seed's ``DcmPath``."""
        sop = check_uid(sop)
        if filename:
            check_file_name(filename)
        if not isinstance(data, (bytes, bytearray)):
            raise DiosError(INVALID_FIELD, "data must be a PNG file", field="data")
        if len(data) > self.max_upload:
            raise DiosError(PAYLOAD_TOO_LARGE, f"{len(data)} bytes; the limit is {self.max_upload}")
        if not bytes(data[:8]) == PNG_SIGNATURE:
            raise DiosError(UNSUPPORTED_MEDIA, "data is not a PNG file")
        ctx = self.study.image_context(sop)
        study, image = ctx["study"], ctx["image"]
        if image.get("storage_status") == "Saved" or image.get("expose_status") != "Unexposed":
            raise DiosError(INVALID_TRANSITION, f"image {sop} already has a stored file")
        if study.get("study_lock") == "Locked":
            raise DiosError(STUDY_LOCKED, study["study_id"])
        from dios.dicom.png import png_to_dx, write_preview_png
        from dios.dicom.reader import read_image

        new_uid = self.uids.instance()
        name = f"{new_uid}.dcm"
        path = self.images_dir / study["study_instance_uid"] / name
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        exp = self.lifecycle.context(sop, with_technique=False)
        image_attrs = exp.image.as_dicom()
        image_attrs["sop_instance_uid"] = new_uid
        png_to_dx(bytes(data), path, patient=exp.patient.as_dicom(), study=exp.study.as_dicom(),
                  series=exp.series.as_dicom(with_view_position=False), image=image_attrs,
                  max_bytes=self.max_upload)
        preview = self.previews_dir / f"{sop}.png"
        try:
            decoded = read_image(path)
            write_preview_png(preview, decoded.pixels, window=decoded.meta.get("window"),
                              max_side=2048)
            private(path, preview)
            self.study.mark_imported(sop, self._relative(path), self._relative(preview),
                                     img_proc={"source": "png-upload"},
                                     secondary_sop_uid=new_uid)
        except BaseException:
            path.unlink(missing_ok=True)
            preview.unlink(missing_ok=True)
            raise
        self.hub.publish(Event(topics.IMAGE_URI, EventKind.IMAGE, topics.IMAGE_STORED, sop,
                               {"study_id": study["study_id"], "sop_instance_uid": sop,
                                "image_file_path": self._relative(path), "source": "upload"}))
        return {"path": name}

    def _relative(self, path: Path) -> str:
        """``path`` (inside the data directory) as stored: relative to the data directory,
        POSIX separators, so the data directory can move."""
        return path.resolve().relative_to(self.data_dir.resolve()).as_posix()

    def image_path(self, sop: str) -> Path:
        """The absolute path of image ``sop``'s stored DICOM file.

        Raises ``INVALID_TRANSITION`` while the image has no file, ``STORAGE_ERROR`` when
        the file is missing.
        """
        return self._stored_path(sop)[0]

    def _stored_path(self, sop: str) -> tuple[Path, dict[str, Any]]:
        sop = check_uid(sop)
        image = self.study.image(sop)
        rel = image.get("image_file_path") or ""
        if not rel:
            raise DiosError(INVALID_TRANSITION, f"image {sop} has no stored file yet")
        path = (self.data_dir / rel).resolve()  # absolute paths stay as they are
        if not path.is_relative_to(self.images_dir.resolve()):
            raise DiosError(BAD_FILE_NAME, "stored path outside the image directory")
        if not path.is_file():
            raise DiosError(STORAGE_ERROR, f"file of image {sop} is missing")
        return path, image

    def image_file(self, sop: str) -> tuple[bytes, str]:
        """The stored DICOM file of image ``sop``: (bytes, file name)."""
        path, _ = self._stored_path(sop)
        return path.read_bytes(), path.name

    def preview(self, sop: str) -> tuple[bytes, str]:
        """The processed 8-bit PNG preview of image ``sop``: (bytes, file name)."""
        path, _ = self._stored_path(sop)
        sop = check_uid(sop)
        prev = self.previews_dir / f"{sop}.png"
        if not prev.is_file():
            from dios.dicom.png import write_preview_png
            from dios.dicom.reader import read_image

            decoded = read_image(path)
            write_preview_png(prev, decoded.pixels, window=decoded.meta.get("window"),
                              max_side=2048)
            private(prev)
        return prev.read_bytes(), prev.name


