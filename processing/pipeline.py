"""The image pipeline: raw detector frame to presentation image, preview, window and EI.

Stages (timed individually in ``PipelineResult.timings``, in milliseconds, plus
``"total"``):

1. ``corrections``: offset, gain, defect interpolation (:mod:`processing.corrections`),
   fused with the first (half-resolution, log-domain) pyramid reduction.
2. ``collimation``: irradiated field (:mod:`processing.collimator`).
3. ``enhancement``: the coarser pyramid levels, noise estimate,
   per-level transfers and latitude compression (:mod:`processing.enhance`).
4. ``window``: exposure and deviation index on the corrected linear frame, automatic
   window over anatomy in the field on the collapsed half-resolution level, i.e. on the
   low-pass of the image actually presented (:mod:`processing.window`). It runs after
   the reduced levels are enhanced so that the window fits the enhanced image.
5. ``output``: finest level + collapse + presentation codes + VOI LUT preview in one
   full-resolution pass, then rotation/flip (:mod:`processing.output`).

Reuse and threads: a :class:`Pipeline` keeps one workspace (all working buffers) per frame
shape and reuses it for every frame of that shape; kernels are compiled once per process
(and loaded from numba's cache in later processes). :meth:`Pipeline.run` holds a lock, so
one pipeline is safe to share between threads (runs are serialised); for parallel runs
use one pipeline per thread. The result's ``image``, ``preview`` and
``collimation.mask`` belong to the caller and stay valid as long as they are referenced:
they come from a small pool of arrays that the pipeline reuses only once no result (nor
any view of one) refers to them, which spares the page faults of fresh multi-megabyte
arrays on every frame. With ``reuse_output=True`` they are instead the workspace's own
buffers, valid until the next run of that shape (fluoroscopy loops).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field

import numba
import numpy as np

from processing.calibration import CalibrationMaps
from processing.collimator import (
    CollimationResult,
    detect_collimation,
    detect_collimation_on_work,
    work_factor,
    work_shape,
)
from processing.corrections import MAX_AREA_FACTOR, DefectPlan, check_raw, correct_reduce
from processing.enhance import Pyramid, log_lut, transfer_params
from processing.output import Presentation, check_orientation, orient, oriented_shape, present
from processing.profiles import Profile, get_profile
from processing.window import WindowResult, auto_window, deviation_index, exposure_index

__all__ = ["Pipeline", "PipelineResult"]

#: Presentation range: the window widened by this factor of its width on each side.
PRESENTATION_SPAN = 1.0


@dataclass
class PipelineResult:
    """The outcome of one pipeline run.

    Attributes
    ----------
    image : numpy.ndarray
        uint16 presentation image (MONOCHROME2, ``bits_stored`` bits), oriented.
    preview : numpy.ndarray
        uint8 preview: ``image`` through the window's VOI LUT, oriented.
    window : (float, float)
        Window center and width in ``image`` codes (width >= 1).
    ei : float
        Exposure index (IEC 62494-1).
    di : float or None
        Deviation index against ``target_ei`` (None without a target, NaN when EI is 0).
    collimation : CollimationResult
        The irradiated field, in the coordinates of the raw (unrotated) frame.
    timings : dict
        Stage name -> milliseconds, and ``"total"``.
    bits_stored : int
        12 or 16.
    noise_sigma : float
        Estimated noise sigma of the finest level (log units).
    profile : str
        Name of the processing profile.
    window_result : WindowResult
        The automatic window in the processing domain (log exposure after enhancement).
    presentation : Presentation
        The map from the processing domain to ``image`` codes.
    """

    image: np.ndarray
    preview: np.ndarray
    window: tuple[float, float]
    ei: float
    di: float | None
    collimation: CollimationResult
    timings: dict[str, float]
    bits_stored: int
    noise_sigma: float = 0.0
    profile: str = "default"
    window_result: WindowResult | None = field(default=None, repr=False)
    presentation: Presentation | None = field(default=None, repr=False)


class _ResultPool:
    """Result arrays handed out to callers and reused once nobody references them.

    Fresh multi-megabyte arrays cost page faults on every frame; an array of the pool is
    reused only when its reference count shows that no result (nor any view of it) holds
    it any more, so results stay valid for as long as the caller keeps them.
    """

    def __init__(self, limit: int = 2) -> None:
        self.limit = limit
        self.items: dict[tuple, list[np.ndarray]] = {}

    def take(self, shape: tuple[int, int], dtype: type) -> np.ndarray:
        arrays = self.items.setdefault((shape, np.dtype(dtype).str), [])
        for a in arrays:
            # references: the pool's list, the loop variable and getrefcount's argument
            if sys.getrefcount(a) <= 3:
                return a
        a = np.empty(shape, dtype)
        if len(arrays) < self.limit:
            arrays.append(a)
        return a

    def nbytes(self) -> int:
        return int(sum(a.nbytes for arrays in self.items.values() for a in arrays))


class _Workspace:
    """All working buffers for frames of one shape."""

    def __init__(self, shape: tuple[int, int], profile: Profile) -> None:
        self.shape = shape
        self.mask = np.empty(shape, np.bool_)
        self.pyr = Pyramid(shape, profile.levels)
        self.img = np.empty(shape, np.uint16)
        self.prev = np.empty(shape, np.uint8)
        self.oimg: dict[tuple[int, int], np.ndarray] = {}
        self.oprev: dict[tuple[int, int], np.ndarray] = {}
        self.pool = _ResultPool()
        self.small: np.ndarray | None = None

    def work_image(self, factor: int, scratch: np.ndarray) -> np.ndarray:
        """The collimator's float32 work image for ``factor``.

        It lives in ``scratch`` (the preview buffer, written only by the output stage,
        after the collimator is done with the work image) when that is large enough,
        which spares its memory; otherwise in a buffer of the workspace.
        """
        shape = work_shape(self.shape, factor)
        n = shape[0] * shape[1]
        if scratch.flags.c_contiguous and scratch.nbytes >= 4 * n:
            return scratch.reshape(-1)[: 4 * n].view(np.float32).reshape(shape)
        if self.small is None or self.small.shape != shape:
            self.small = np.empty(shape, np.float32)
        return self.small

    def oriented(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if shape not in self.oimg:
            self.oimg[shape] = np.empty(shape, np.uint16)
            self.oprev[shape] = np.empty(shape, np.uint8)
        return self.oimg[shape], self.oprev[shape]

    def nbytes(self) -> int:
        arrays = [self.mask, self.img, self.prev, *self.pyr.g, *self.pyr.c,
                  *self.oimg.values(), *self.oprev.values()]
        if self.small is not None:
            arrays.append(self.small)
        return int(sum(a.nbytes for a in arrays)) + self.pool.nbytes()


class Pipeline:
    """A reusable, thread-safe image pipeline for one processing profile.

    Parameters
    ----------
    profile : Profile or str
        Profile or profile name / catalog ``img_proc_id`` (see
        :func:`processing.profiles.get_profile`).
    shape : (int, int), optional
        Frame shape to preallocate and warm up for (the first run of any other shape
        allocates its workspace then).
    threads : int, optional
        numba threads for the parallel kernels (default: numba's configured count).

    Examples
    --------
    A collimated 512 x 512 frame with a uniform field, already corrected (no maps):

    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:512, 0:512]
    >>> field = (xx >= 100) & (xx < 400) & (yy >= 60) & (yy < 450)
    >>> raw = np.random.default_rng(0).poisson(np.where(field, 4000.0, 300.0))
    >>> pipe = Pipeline("chest")
    >>> r = pipe.run(raw.astype(np.uint16), None, counts_per_ugy=400.0, target_ei=1000.0)
    >>> r.collimation.kind, r.image.dtype.name, r.bits_stored, r.preview.dtype.name
    ('rect', 'uint16', 12, 'uint8')
    >>> round(r.ei), abs(round(r.di, 1))
    (1000, 0.0)
    >>> sorted(r.timings)
    ['collimation', 'corrections', 'enhancement', 'output', 'total', 'window']
    """

    def __init__(self, profile: Profile | str, shape: tuple[int, int] | None = None, *,
                 threads: int | None = None) -> None:
        self.profile = get_profile(profile)
        if threads is not None and not 1 <= int(threads) <= numba.config.NUMBA_NUM_THREADS:
            raise ValueError(f"threads must be in 1..{numba.config.NUMBA_NUM_THREADS}")
        self.threads = None if threads is None else int(threads)
        self._lock = threading.Lock()
        self._lut = log_lut()
        self._ws: dict[tuple[int, int], _Workspace] = {}
        self._plan: DefectPlan | None = None
        self._plan_key: object = None
        if shape is not None:
            shape = (int(shape[0]), int(shape[1]))
            self.warm_up(shape)

    # ------------------------------------------------------------------ buffers
    def _workspace(self, shape: tuple[int, int]) -> _Workspace:
        ws = self._ws.get(shape)
        if ws is None:
            ws = self._ws[shape] = _Workspace(shape, self.profile)
        return ws

    def workspace_bytes(self) -> int:
        """Bytes held by the preallocated working buffers."""
        return sum(ws.nbytes() for ws in self._ws.values())

    def warm_up(self, shape: tuple[int, int]) -> None:
        """Load every kernel and allocate the workspace for ``shape``.

        Runs a small synthetic frame with (identity) calibration maps, then a synthetic
        frame of ``shape`` without maps; the small workspace is dropped again.
        """
        def synthetic(h: int, w: int) -> np.ndarray:
            yy, xx = np.ogrid[0:h, 0:w]
            return (2000 + 1000 * np.sin(xx / 37.0) * np.cos(yy / 53.0)).astype(np.uint16)

        small = (64, 64)
        self.run(synthetic(*small), CalibrationMaps.identity(small), target_ei=100.0)
        if tuple(shape) != small:
            self._ws.pop(small, None)
            self._plan = None
            self._plan_key = None
        self.run(synthetic(*shape), None, target_ei=100.0)

    def _defect_plan(self, maps: CalibrationMaps) -> DefectPlan:
        """The defect plan of ``maps``, rebuilt only when the defect map changed."""
        plan = self._plan
        if plan is not None and self._plan_key is maps.defect:
            return plan  # the same map object: calibration maps are treated as immutable
        if (plan is None or plan.shape != maps.shape
                or not np.array_equal(np.flatnonzero(maps.defect), plan.idx)):
            plan = self._plan = DefectPlan(maps.defect)
        self._plan_key = maps.defect
        return plan

    # ------------------------------------------------------------------ run
    def run(self, raw: np.ndarray, maps: CalibrationMaps | None, *,
            counts_per_ugy: float = 100.0, target_ei: float | None = None, rotate: int = 0,
            hflip: bool = False, reuse_output: bool = False) -> PipelineResult:
        """Process one raw frame.

        Parameters
        ----------
        raw : numpy.ndarray
            2-D uint16 raw frame (at least 32x32).
        maps : CalibrationMaps or None
            Calibration of the frame's mode (None: the frame is already corrected).
        counts_per_ugy : float
            Exposure-index calibration factor of the detector mode.
        target_ei : float, optional
            The view's target EI for the deviation index.
        rotate : int
            ImageRotate: 0, 90, 180 or 270 degrees clockwise.
        hflip : bool
            ImageHorizontalFlip (after rotating).
        reuse_output : bool
            Return the workspace's output buffers instead of fresh arrays.

        Returns
        -------
        PipelineResult

        Raises
        ------
        TypeError, ValueError
            Bad frame (see :func:`processing.corrections.check_raw`), maps of another
            shape, bad orientation, counts_per_ugy or target_ei. Nothing is modified.
        """
        t_start = time.perf_counter()
        raw = check_raw(raw)
        if min(raw.shape) < 32:
            raise ValueError(f"raw frame {raw.shape} is too small (at least 32x32)")
        rotate, hflip = check_orientation(rotate, hflip)
        if not (isinstance(counts_per_ugy, int | float) and math.isfinite(counts_per_ugy)
                and counts_per_ugy > 0):
            raise ValueError(f"counts_per_ugy must be a positive number, got "
                             f"{counts_per_ugy!r}")
        if target_ei is not None:
            target_ei = float(target_ei)
            if not (math.isfinite(target_ei) and target_ei > 0):
                raise ValueError(f"target_ei must be a positive number, got {target_ei!r}")
        if maps is not None:
            if not isinstance(maps, CalibrationMaps):
                raise TypeError(f"maps must be CalibrationMaps, got {type(maps).__name__}")
            if maps.shape != raw.shape:
                raise ValueError(f"calibration maps {maps.shape} do not match the frame "
                                 f"{raw.shape}")
        with self._lock:
            if self.threads is not None:
                numba.set_num_threads(self.threads)
            return self._run(raw, maps, float(counts_per_ugy), target_ei, rotate, hflip,
                             reuse_output, t_start)

    def _run(self, raw, maps, counts_per_ugy, target_ei, rotate, hflip, reuse_output,
             t_start) -> PipelineResult:
        prof = self.profile
        timings: dict[str, float] = {}
        ws = self._workspace(raw.shape)
        t0 = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal t0
            now = time.perf_counter()
            timings[name] = (now - t0) * 1e3
            t0 = now

        # The corrected frame is written into the buffer that becomes the presentation
        # image: the fused output pass reads each corrected pixel and overwrites it.
        oriented = rotate != 0 or hflip
        if reuse_output or oriented:
            work, prev = ws.img, ws.prev
        else:
            work = ws.pool.take(raw.shape, np.uint16)
            prev = ws.pool.take(raw.shape, np.uint8)
        plan = self._defect_plan(maps) if maps is not None else None
        pyr = ws.pyr
        cmask = ws.mask if reuse_output else ws.pool.take(raw.shape, np.bool_)
        factor = work_factor(raw.shape)
        if maps is not None and factor <= MAX_AREA_FACTOR:
            # corrections fused with the first pyramid reduction (level 1, log domain) and
            # with the collimator's work image (block mean), in one pass over the frame
            small = ws.work_image(factor, prev)
            correct_reduce(raw, maps, work, plan, self._lut, pyr.g[0], area=(factor, small))
            lap("corrections")
            coll = detect_collimation_on_work(small, factor, cmask)
        else:
            correct_reduce(raw, maps, work, plan, self._lut, pyr.g[0])
            lap("corrections")
            coll = detect_collimation(work, out_mask=cmask)
        field_mask = coll.mask if coll.kind != "none" and coll.mask.any() else None
        lap("collimation")

        pyr.build_rest()
        sigma = pyr.noise_sigma(work, self._lut, field_mask)
        pyr.collapse(prof, sigma, field_mask)
        lap("enhancement")

        ei = exposure_index(work, field_mask, counts_per_ugy,
                            direct_exposure_ratio=prof.ei_direct_exposure_ratio)
        di = deviation_index(ei, target_ei) if target_ei is not None else None
        win = auto_window(pyr.c[0], field_mask, reference=pyr.g[0], log_domain=True,
                          percentiles=prof.window_percentiles, margin=prof.window_margin,
                          direct_exposure_ratio=prof.direct_exposure_ratio)
        span = PRESENTATION_SPAN * win.width
        pres = Presentation(win.center - 0.5 * win.width - span,
                            win.center + 0.5 * win.width + span, prof.output_bits)
        center = pres.code(win.center)
        width = max(1.0, win.width * pres.scale)
        lap("window")

        present(work, self._lut, pyr, transfer_params(0, prof, sigma), pres,
                (center, width), work, prev)
        img = work
        if oriented:
            oshape = oriented_shape(raw.shape, rotate)
            if reuse_output:
                oimg, oprev = ws.oriented(oshape)
            else:
                oimg = ws.pool.take(oshape, np.uint16)
                oprev = ws.pool.take(oshape, np.uint8)
            img = orient(img, rotate, hflip, out=oimg)
            prev = orient(prev, rotate, hflip, out=oprev)
        lap("output")
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return PipelineResult(image=img, preview=prev, window=(float(center), float(width)),
                              ei=float(ei), di=di, collimation=coll, timings=timings,
                              bits_stored=prof.output_bits, noise_sigma=float(sigma),
                              profile=prof.name, window_result=win, presentation=pres)
