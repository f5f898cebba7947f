"""Offline processing: a raw frame from a file through the pipeline to DICOM + PNG (``dios process``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dios.codes import BAD_FRAME, UNKNOWN_PROFILE, DiosError

#: Pixel pitch assumed when neither the caller nor the input file gives one (mm).
DEFAULT_PITCH_MM = 0.15


def load_raw(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a raw frame from ``.npy`` (2-D integer array) or a DICOM file."""
    if not path.is_file():
        raise DiosError(BAD_FRAME, f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DiosError(BAD_FRAME, f"{path}: not a NumPy array file ({exc})") from None
        if arr.ndim != 2 or arr.size == 0:
            raise DiosError(BAD_FRAME, f"{path}: expected a 2-D frame, got shape {arr.shape}")
        if arr.dtype != np.uint16:
            if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 65535:
                raise DiosError(BAD_FRAME, f"{path}: expected uint16 values, got {arr.dtype}")
            arr = arr.astype(np.uint16)
        return np.ascontiguousarray(arr), {}
    from dios.dicom.reader import read_image

    try:
        img = read_image(path)
    except (ValueError, TypeError) as exc:
        raise DiosError(BAD_FRAME, f"{path}: {exc}") from None
    return np.ascontiguousarray(img.pixels), dict(img.meta)


def process_file(path: Path, *, profile: str = "default", out_dir: Path = Path("."),
                 calibration: Path | None = None, counts_per_ugy: float = 100.0,
                 progress: Callable[[str, str], None] | None = None,
                 uid_root: str | None = None,
                 pixel_pitch_mm: float | None = None) -> dict[str, Any]:
    """Process one raw frame file; write ``<stem>.dcm`` and ``<stem>.png`` into ``out_dir``.

    The detector pixel pitch (ImagerPixelSpacing, mandatory in a DX image) comes from
    ``pixel_pitch_mm``, else from the input DICOM's pixel spacing, else
    :data:`DEFAULT_PITCH_MM` (reported in the result).
    """
    from datetime import datetime

    from dios.dicom.dx import write_dx
    from dios.dicom.png import write_preview_png
    from dios.uids import DEFAULT_UID_ROOT, UidFactory
    from processing.calibration import CalibrationMaps
    from processing.pipeline import Pipeline
    from processing.profiles import PROFILES

    if profile not in PROFILES:
        raise DiosError(UNKNOWN_PROFILE, f"{profile!r}; known: {', '.join(sorted(PROFILES))}")
    say = progress or (lambda step, detail: None)
    say("load", str(path))
    raw, meta = load_raw(path)
    spacing = meta.get("pixel_spacing_mm")
    pitch = pixel_pitch_mm or (float(spacing[0]) if spacing else None) or DEFAULT_PITCH_MM
    maps = CalibrationMaps.load(calibration) if calibration else None
    if maps is not None and maps.offset.shape != raw.shape:
        raise DiosError(BAD_FRAME, f"calibration maps {maps.offset.shape} do not fit frame {raw.shape}")
    say("process", f"profile {profile}, frame {raw.shape[0]} x {raw.shape[1]}")
    try:
        result = Pipeline(profile).run(raw, maps, counts_per_ugy=counts_per_ugy)
    except (ValueError, TypeError) as exc:
        raise DiosError(BAD_FRAME, str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    uids = UidFactory(uid_root or DEFAULT_UID_ROOT)
    now = datetime.now()
    stem = path.stem
    dcm = out_dir / f"{stem}.dcm"
    png = out_dir / f"{stem}.png"
    say("store", f"{dcm.name}, {png.name}")
    shutter = result.collimation.shutter_attributes() if result.collimation is not None else None
    write_dx(
        dcm, result.image, bits_stored=result.bits_stored,
        patient={"patient_id": meta.get("patient_id", stem[:64]),
                 "patient_name": meta.get("patient_name", ""), "patient_sex": meta.get("patient_sex", "O")},
        study={"study_instance_uid": uids.study(), "study_id": now.strftime("%Y%m%d%H%M%S"),
               "accession_number": "", "study_datetime": now.isoformat()},
        series={"series_instance_uid": uids.series(), "series_number": 1,
                "body_part": meta.get("body_part", "")},
        image={"sop_instance_uid": uids.instance(), "instance_number": 1},
        acquisition={k: v for k, v in (("ei", result.ei), ("kv", meta.get("kv")),
                                       ("mas", meta.get("mas"))) if v is not None},
        detector={"pixel_pitch_mm": pitch, "detector_type": "SCINTILLATOR"},
        window=tuple(result.window),
        shutter=shutter or None,
    )
    write_preview_png(png, result.preview)
    return {"dicom": str(dcm), "preview": str(png), "pixel_pitch_mm": pitch,
            "window": f"WC {result.window[0]:.0f} WW {result.window[1]:.0f}",
            "ei": f"{result.ei:.0f}", "collimation": result.collimation.kind if result.collimation else "n/a",
            "timings_ms": {k: round(v, 2) for k, v in result.timings.items()}}
