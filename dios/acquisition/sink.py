"""The one frame -> pipeline -> DICOM -> files sink of the acquisition lifecycle.

:class:`FrameSink` runs the image pipeline on a detector frame with the view's settings
(profile, rotation, flip, target exposure index, the detector's calibration factor),
writes the DICOM *Digital X-Ray Image For Presentation* and the 8-bit PNG preview
atomically, and returns what the store records (:class:`StoredFrame`). Committing the
image in the database is the lifecycle's step, not the sink's, so that the one outcome
of an exposure is decided in one place.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dios.acquisition.context import ExposureContext
from dios.codes import STORAGE_ERROR, DiosError
from dios.devices.backends import ExposureRecord, Frame
from dios.store.files import PRIVATE_DIR, PRIVATE_FILE


@dataclass
class StoredFrame:
    """A processed frame whose files are written (not yet committed in the database)."""

    record: ExposureRecord
    frame: Frame
    result: Any  # processing.pipeline.PipelineResult
    context: ExposureContext
    acquisition: dict[str, Any]
    img_proc: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


def process_frame(pipeline: Any, frame: Frame, calibration: Any, ctx: ExposureContext) -> Any:
    """Run ``pipeline`` on a detector frame with the view's settings."""
    v = ctx.view
    return pipeline.run(frame.pixels, calibration, counts_per_ugy=frame.mode.counts_per_ugy,
                        target_ei=v.target_ei, rotate=v.rotate, hflip=v.hflip)


def acquisition_attributes(record: ExposureRecord, result: Any, ctx: ExposureContext) -> dict[str, Any]:
    """The DICOM writer's ``acquisition`` mapping from what was delivered and measured."""
    acq: dict[str, Any] = {
        "kv": record.kv, "ma": record.ma, "ms": record.ms, "mas": record.mas,
        "focus": record.focus, "dap": record.dap_dgycm2, "ei": getattr(result, "ei", None),
        "di": getattr(result, "di", None), "target_ei": ctx.view.target_ei,
    }
    if ctx.view.sid_cm:
        acq["sid"] = ctx.view.sid_cm * 10.0
    return finite({k: v for k, v in acq.items() if v is not None})


def detector_attributes(frame: Frame, backend_name: str = "") -> dict[str, Any]:
    """The DICOM writer's ``detector`` mapping from the frame's panel mode."""
    m = frame.mode
    return {"detector_id": m.name, "detector_type": "SCINTILLATOR",
            "pixel_pitch_mm": m.pixel_pitch_mm, "bits": m.bits,
            "model": m.description or m.name, "manufacturer": backend_name or "DIOS"}


def shutter_attributes(result: Any, shape: tuple[int, ...], ctx: ExposureContext) -> dict[str, Any] | None:
    """The detected field as Display Shutter attributes of the *presented* image (rotated
    and flipped like it), or None without collimation."""
    from processing.output import orient_shutter

    col = result.collimation
    attrs = col.shutter_attributes() if col is not None else {}
    if not attrs:
        return None
    return orient_shutter(attrs, shape, ctx.view.rotate, ctx.view.hflip)


def finite(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without NaN/inf numbers (neither JSON nor DICOM), recursively; NumPy
    scalars become Python numbers."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = finite(v)
            continue
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            continue
        out[k] = v
    return out


def private(*paths: Path | None) -> None:
    """Patient data files: readable and writable by the server's user only (0600)."""
    for p in paths:
        if p is not None and p.exists():
            os.chmod(p, PRIVATE_FILE)


class FrameSink:
    """Pipeline and files for the frames of exposures; one pipeline kept per profile.

    Parameters
    ----------
    backend_name : str
        The detector backend's name (DICOM Manufacturer of the detector).
    site : dict, optional
        Attributes of the site written into every file by keyword (``InstitutionName``,
        ``StationName``); empty values are left out.
    """

    def __init__(self, backend_name: str = "", site: dict[str, str] | None = None) -> None:
        self.backend_name = backend_name
        self.site = {k: v for k, v in (site or {}).items() if v}
        self._pipelines: dict[str, Any] = {}
        self._lock = threading.Lock()

    def pipeline(self, profile: str) -> Any:
        from processing.pipeline import Pipeline

        with self._lock:
            pipe = self._pipelines.get(profile)
            if pipe is None:
                pipe = self._pipelines[profile] = Pipeline(profile or "default")
            return pipe

    def process(self, ctx: ExposureContext, frame: Frame, record: ExposureRecord | None,
                calibration: Any) -> StoredFrame:
        """Run the pipeline and write the DICOM file and the preview of ``ctx``'s image."""
        from dios.dicom.dx import write_dx
        from dios.dicom.png import write_preview_png

        if ctx.dicom_path is None or ctx.preview_path is None:
            raise DiosError(STORAGE_ERROR, "no file paths for the image")
        t0 = time.perf_counter()
        result = process_frame(self.pipeline(ctx.view.img_proc_id), frame, calibration, ctx)
        t1 = time.perf_counter()
        if record is None:  # the generator reported no readback: the set technique
            t = ctx.technique
            record = ExposureRecord(t.kv, t.ma, t.ms, t.mas, t.focus, 0.0, 0.0)
        acquisition = acquisition_attributes(record, result, ctx)
        try:
            ctx.dicom_path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            write_dx(ctx.dicom_path, result.image, bits_stored=result.bits_stored,
                     patient=ctx.patient.as_dicom(), study=ctx.study.as_dicom(),
                     series=ctx.series.as_dicom(), image=ctx.image.as_dicom(),
                     acquisition=acquisition,
                     detector=detector_attributes(frame, self.backend_name),
                     window=(result.window[0], result.window[1]),
                     shutter=shutter_attributes(result, frame.pixels.shape, ctx),
                     extra=dict(self.site) or None)
            write_preview_png(ctx.preview_path, result.preview, window=(127.5, 256.0))
            private(ctx.dicom_path, ctx.preview_path)
        except OSError as exc:
            discard(ctx)
            raise DiosError(STORAGE_ERROR, str(exc)) from None
        except BaseException:
            discard(ctx)
            raise
        timings = {f"pipeline.{k}": v for k, v in result.timings.items()}
        timings["process"] = (t1 - t0) * 1000.0
        timings["files"] = (time.perf_counter() - t1) * 1000.0
        img_proc = finite({"profile": ctx.view.img_proc_id, "ei": result.ei, "di": result.di,
                           "window_center": result.window[0], "window_width": result.window[1],
                           "timings_ms": {k: round(v, 2) for k, v in timings.items()}})
        return StoredFrame(record, frame, result, ctx, acquisition, img_proc, timings)


def summary(stored: StoredFrame) -> dict[str, Any]:
    """A plain-data summary of a stored exposure, for printing or JSON."""
    from dataclasses import asdict

    res = stored.result
    col = res.collimation
    ctx = stored.context
    return {
        "technique": asdict(ctx.technique),
        "delivered": asdict(stored.record),
        "frame": {"shape": list(stored.frame.pixels.shape), "mode": stored.frame.mode.name},
        "window": {"center": res.window[0], "width": res.window[1]},
        "ei": res.ei, "di": res.di,
        "collimation": {"kind": col.kind, "confidence": col.confidence} if col else None,
        "dicom": str(ctx.dicom_path.resolve()) if ctx.dicom_path else None,
        "preview": str(ctx.preview_path.resolve()) if ctx.preview_path else None,
        "timings_ms": {k: round(v, 2) for k, v in stored.timings.items()},
    }


def discard(ctx: ExposureContext) -> None:
    """Remove the files of ``ctx``'s image (a store that did not commit)."""
    for p in (ctx.dicom_path, ctx.preview_path):
        if p is not None:
            p.unlink(missing_ok=True)
