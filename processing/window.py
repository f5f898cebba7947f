"""Automatic window (WW/WL), VOI LUT, exposure index and deviation index.

Both the window and the exposure index are computed over *anatomy inside the irradiated
field*: the shuttered area (outside ``field_mask``) and direct exposure (pixels brighter
than ``direct_exposure_ratio`` times the direct-exposure level, taken as the 99.5th
percentile of the field; 0.8 for the window, 0.9 for the exposure index, which keeps thin
anatomy near the skin line in its value of interest) are excluded. When that leaves less than 5 % of the field (a flat
exposure without anatomy), the whole field is used; when the field mask is empty, the
whole image. Statistics come from histograms of a regular subsample (about 60 000
samples), which keeps percentiles within a small fraction of a grey level of the full
frame.

Exposure index per IEC 62494-1: ``EI = 100 * K`` with ``K`` the air kerma in uGy at the
detector that gives the value of interest ``VOI`` (the median of the corrected linear
signal over anatomy), ``K = VOI / counts_per_ugy``. Deviation index
``DI = 10 * log10(EI / EI_T)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from processing import _kernels as K
from processing.lut import histogram_u16

__all__ = ["WindowResult", "auto_window", "exposure_index", "exposure_stats",
           "deviation_index", "voi_lut", "subsample_step"]

_DUMMY_MASK = np.zeros((1, 1), np.uint8)
_DUMMY_GATE = np.zeros((1, 1), np.float32)
#: Fraction of the field that must remain after excluding direct exposure.
MIN_ANATOMY_FRACTION = 0.05
#: Percentile of the field taken as the direct-exposure level.
DIRECT_PERCENTILE = 99.5
#: Target number of histogram samples.
TARGET_SAMPLES = 60_000


@dataclass
class WindowResult:
    """An automatic window.

    Attributes
    ----------
    center, width : float
        Window center and width in the units of the image it was computed on (width > 0).
    lower, upper : float
        The anatomy percentiles the window was derived from (before the margin).
    n_samples : int
        Histogram samples over anatomy.
    anatomy_fraction : float
        Fraction of the field samples classified as anatomy.
    voi_lut : numpy.ndarray or None
        A VOI LUT for this window, when the caller asked for one (see :func:`voi_lut`).
    """

    center: float
    width: float
    lower: float
    upper: float
    n_samples: int
    anatomy_fraction: float
    voi_lut: np.ndarray | None = None


def subsample_step(shape: tuple[int, ...], target: int = TARGET_SAMPLES) -> int:
    """Histogram subsampling step giving about ``target`` samples for ``shape``."""
    n = int(np.prod(shape))
    return max(1, int(math.sqrt(n / max(1, target))))


def _check_image(image: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D image, got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"{what}: empty image")
    if image.dtype.kind not in "uif" :
        raise TypeError(f"{what}: expected a numeric image, got {image.dtype}")
    if image.dtype not in (np.uint16, np.float32, np.float64):
        image = image.astype(np.float32)
    return image


def _check_mask(mask: np.ndarray | None, shape: tuple[int, int], what: str
                ) -> tuple[np.ndarray, int]:
    """Return (uint8 mask or dummy, scale) for a mask of shape ``shape`` times an integer."""
    if mask is None:
        return _DUMMY_MASK, 1
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype not in (np.bool_, np.uint8):
        raise ValueError(f"{what}: field_mask must be a 2-D bool array, got "
                         f"{mask.dtype} {mask.shape}")
    s = max(1, round(mask.shape[0] / shape[0]))
    if (mask.shape[0] < (shape[0] - 1) * s + 1 or mask.shape[1] < (shape[1] - 1) * s + 1
            or round(mask.shape[1] / shape[1]) != s):
        raise ValueError(f"{what}: field_mask shape {mask.shape} does not match the image "
                         f"{shape} (same shape or an integer multiple)")
    if mask.size == 1:  # a 1x1 mask would read as "no mask" in the kernels
        mask = np.repeat(mask, 2, axis=1)
    return np.ascontiguousarray(mask).view(np.uint8), s


def _percentile(hist: np.ndarray, lo: float, hi: float, q: float,
                total: int | None = None) -> float:
    """Percentile ``q`` (0-100) of a histogram over [lo, hi), linear within the bin
    (``total``: ``hist.sum()`` when the caller knows it)."""
    n = int(hist.sum()) if total is None else int(total)
    if n <= 0:
        return float("nan")
    target = q / 100.0 * n
    b, before = K.hist_search(hist, float(target))
    b = int(b)
    frac = (target - before) / hist[b] if hist[b] > 0 else 0.5
    width = (hi - lo) / hist.size
    return float(lo + (b + min(max(frac, 0.0), 1.0)) * width)


def _hist(img, step, mask, ms, gate, gmax, nbins):
    """Histogram of the samples between their finite min and max (one strided pass:
    the samples are gathered, then ranged and binned contiguously)."""
    h, w = img.shape
    vals = np.empty(-(-h // step) * -(-w // step),
                    np.float64 if img.dtype == np.float64 else np.float32)
    m = K.gather_samples(img, step, mask, ms, gate, gmax, vals)
    return _range_hist(vals[:m], nbins)


def _range_hist(vals, nbins):
    """Histogram of gathered samples (no NaN) between their finite min and max:
    ``(hist, lo, hi, finite count)`` or None without a finite sample."""
    m = vals.size
    if m == 0:
        return None
    hist = np.zeros(nbins, np.int64)
    # the gathered samples hold no NaN: numpy's (vectorised) min and max are the finite
    # range unless a sample is infinite, which the kernel's finite scan handles
    lo, hi = vals.min(), vals.max()
    if math.isinf(lo) or math.isinf(hi):
        vmin, vmax, n = K.minmax_hist_1d(vals, nbins, hist)
    else:
        vmin, vmax = K.hist_range_1d(vals, float(lo), float(hi), nbins, hist)
        n = m
    if n == 0:
        return None
    return hist, float(vmin), float(vmax), n


def _pairs(image, ref, step, mask, ms):
    """``ref``'s non-NaN samples (in the field) and ``image``'s at the same pixels."""
    h, w = ref.shape
    n = -(-h // step) * -(-w // step)
    rv = np.empty(n, np.float32)
    iv = np.empty(n, np.float32)
    m = K.gather_pairs(image, ref, step, mask, ms, rv, iv)
    return rv[:m], iv[:m]


def auto_window(image: np.ndarray, field_mask: np.ndarray | None = None, *,
                reference: np.ndarray | None = None, log_domain: bool = False,
                percentiles: tuple[float, float] = (0.5, 99.5), margin: float = 0.05,
                direct_exposure_ratio: float = 0.8, step: int | None = None,
                nbins: int = 4096, min_width: float | None = None) -> WindowResult:
    """Automatic window over anatomy inside the field.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image (uint16 or float; NaN samples are ignored).
    field_mask : numpy.ndarray, optional
        bool map of the irradiated field, of the image's shape or an integer multiple of
        it (a full-resolution mask for a pyramid level). None: the whole image.
    reference : numpy.ndarray, optional
        Image of the same shape on which direct exposure is recognised (default: image);
        the pipeline passes the unenhanced low-pass level.
    log_domain : bool
        True when ``reference`` holds log exposure: the direct-exposure threshold is then
        ``level + log(ratio)`` instead of ``level * ratio``.
    percentiles : (float, float)
        Anatomy percentiles bounding the window.
    margin : float
        Relative widening of the window on each side.
    direct_exposure_ratio : float
        See the module docstring.
    step : int, optional
        Histogram subsampling step (default: :func:`subsample_step`).
    nbins : int
        Histogram bins between the sampled minimum and maximum.
    min_width : float, optional
        Smallest width returned (default 1 for integer images, else 1e-6 relative to the
        center, at least 1e-6): the width is never zero or negative.

    Returns
    -------
    WindowResult

    Raises
    ------
    ValueError
        On an empty or non 2-D image, a mismatched mask, or an image without any finite
        sample.

    Examples
    --------
    A collimated frame: the shutter (dark) and the direct exposure (brightest) stay out
    of the window, which spans the anatomy in the field.

    >>> import numpy as np
    >>> img = np.full((256, 256), 50, np.uint16)  # shuttered
    >>> img[32:224, 32:224] = 20000  # direct exposure in the field
    >>> img[64:192, 64:192] = np.linspace(2000, 6000, 128).astype(np.uint16)  # anatomy
    >>> field = np.zeros(img.shape, bool)
    >>> field[32:224, 32:224] = True
    >>> w = auto_window(img, field, percentiles=(0.0, 100.0), margin=0.0)
    >>> round(w.lower), round(w.upper)
    (2000, 6000)
    """
    image = _check_image(image, "auto_window")
    lo_q, hi_q = percentiles
    if not 0.0 <= lo_q < hi_q <= 100.0:
        raise ValueError(f"auto_window: bad percentiles {percentiles}")
    if not 0.0 < direct_exposure_ratio < 1.0:
        raise ValueError("auto_window: direct_exposure_ratio must be in (0, 1)")
    if margin < 0:
        raise ValueError("auto_window: margin must be >= 0")
    ref = image if reference is None else _check_image(reference, "auto_window reference")
    if ref.shape != image.shape:
        raise ValueError(f"auto_window: reference shape {ref.shape} != image {image.shape}")
    mask, ms = _check_mask(field_mask, image.shape, "auto_window")
    step = int(step) if step else subsample_step(image.shape)
    if step < 1:
        raise ValueError("auto_window: step must be >= 1")

    # float32 image and reference (the pipeline): both are sampled in one pass and the
    # anatomy samples are then taken from the pairs (the gate is the reference itself)
    paired = image.dtype == np.float32 and ref.dtype == np.float32
    if paired:
        pairs = _pairs(image, ref, step, mask, ms)
        href = _range_hist(pairs[0], nbins)
    else:
        href = _hist(ref, step, mask, ms, _DUMMY_GATE, 0.0, nbins)
    if href is None and mask is not _DUMMY_MASK:  # empty field: fall back to the image
        mask, ms = _DUMMY_MASK, 1
        if paired:
            pairs = _pairs(image, ref, step, mask, ms)
            href = _range_hist(pairs[0], nbins)
        else:
            href = _hist(ref, step, mask, ms, _DUMMY_GATE, 0.0, nbins)
    if href is None:
        raise ValueError("auto_window: the image has no finite sample")
    hist, rlo, rhi, n_field = href
    top = _percentile(hist, rlo, rhi, DIRECT_PERCENTILE)
    if log_domain:
        gmax = top + math.log(direct_exposure_ratio)
    else:
        gmax = top * direct_exposure_ratio if top > 0 else math.inf
    if paired:
        rv, iv = pairs
        out = np.empty(iv.size, np.float32)
        got = _range_hist(out[:K.compact_gated(iv, rv, gmax, out)], nbins)
    else:
        gate = np.ascontiguousarray(ref, dtype=np.float32)
        got = _hist(image, step, mask, ms, gate, gmax, nbins)
    if got is None or got[3] < MIN_ANATOMY_FRACTION * n_field:
        got = _hist(image, step, mask, ms, _DUMMY_GATE, 0.0, nbins)
    assert got is not None
    hist, vlo, vhi, n = got
    lower = _percentile(hist, vlo, vhi, lo_q)
    upper = _percentile(hist, vlo, vhi, hi_q)
    center = 0.5 * (lower + upper)
    width = (upper - lower) * (1.0 + 2.0 * margin)
    if min_width is None:
        min_width = 1.0 if image.dtype.kind in "ui" else max(1e-6, 1e-6 * abs(center))
    width = max(float(width), float(min_width))
    return WindowResult(center=float(center), width=width, lower=lower, upper=upper,
                        n_samples=int(n), anatomy_fraction=float(n / max(1, n_field)))


def exposure_stats(raw_corrected: np.ndarray, field_mask: np.ndarray | None,
                   *, direct_exposure_ratio: float = 0.9, step: int | None = None
                   ) -> tuple[float, int]:
    """Value of interest (median over anatomy in the field) of a corrected linear frame.

    Returns
    -------
    (float, int)
        VOI in detector counts and the number of samples it came from.
    """
    img = _check_image(raw_corrected, "exposure_index")
    if not 0.0 < direct_exposure_ratio < 1.0:
        raise ValueError("exposure_index: direct_exposure_ratio must be in (0, 1)")
    step = int(step) if step else subsample_step(img.shape)
    if field_mask is not None:
        field_mask = np.asarray(field_mask)
        if field_mask.shape != img.shape:
            raise ValueError(f"exposure_index: field_mask shape {field_mask.shape} != "
                             f"image {img.shape}")
        if not field_mask.any():
            field_mask = None
    if img.dtype == np.uint16:
        hist, n = histogram_u16(img, step, field_mask)
        lo, hi = 0.0, float(hist.size)
    else:
        mask, ms = _check_mask(field_mask, img.shape, "exposure_index")
        vmin, vmax, n = K.minmax_f32(img, step, mask, ms, _DUMMY_GATE, 0.0)
        if n == 0:
            raise ValueError("exposure_index: the frame has no finite sample")
        lo, hi = 0.0, max(float(vmax), 1e-6) * (1 + 1e-6)
        hist = np.zeros(65536, np.int64)
        K.hist_f32(img, lo, hi, hist.size, step, mask, ms, _DUMMY_GATE, 0.0, hist)
    if n == 0:
        return 0.0, 0
    # every sample of the uint16 histogram lies in a bin: its sum is n
    total = n if img.dtype == np.uint16 else int(hist.sum())
    top = _percentile(hist, lo, hi, DIRECT_PERCENTILE, total)
    cut = int((top * direct_exposure_ratio - lo) / (hi - lo) * hist.size)
    anat = hist[:max(cut, 0)]
    n_anat = int(anat.sum()) if anat.size < hist.size else total
    if n_anat < MIN_ANATOMY_FRACTION * n:
        anat = hist
        n_anat = total
    hi_a = lo + (hi - lo) * anat.size / hist.size
    voi = _percentile(anat, lo, hi_a, 50.0, n_anat)
    if img.dtype == np.uint16:
        voi -= 0.5  # integer bins: bin b holds the value b, centred at b + 0.5
    return max(float(voi), 0.0), n_anat


def exposure_index(raw_corrected: np.ndarray, field_mask: np.ndarray | None,
                   counts_per_ugy: float, *, direct_exposure_ratio: float = 0.9,
                   step: int | None = None) -> float:
    """Exposure index (IEC 62494-1) of an offset/gain corrected linear frame.

    Parameters
    ----------
    raw_corrected : numpy.ndarray
        Corrected linear frame (uint16 or float; NaN ignored).
    field_mask : numpy.ndarray or None
        bool irradiated-field map of the frame's shape (None or empty: whole frame).
    counts_per_ugy : float
        Detector calibration factor: corrected counts per uGy of air kerma (RQA5).
    direct_exposure_ratio, step
        See :func:`auto_window`.

    Returns
    -------
    float
        ``EI = 100 * VOI / counts_per_ugy`` (0.0 for a frame without signal).

    Examples
    --------
    A uniform field of 4000 counts on a detector with 400 counts per uGy: 10 uGy.

    >>> import numpy as np
    >>> round(exposure_index(np.full((64, 64), 4000, np.uint16), None, 400.0))
    1000
    """
    if not (isinstance(counts_per_ugy, int | float) and math.isfinite(counts_per_ugy)
            and counts_per_ugy > 0):
        raise ValueError(f"exposure_index: counts_per_ugy must be a positive number, got "
                         f"{counts_per_ugy!r}")
    voi, _ = exposure_stats(raw_corrected, field_mask,
                            direct_exposure_ratio=direct_exposure_ratio, step=step)
    return 100.0 * voi / float(counts_per_ugy)


def deviation_index(ei: float, target_ei: float) -> float:
    """Deviation index ``DI = 10 log10(EI / EI_T)``.

    Returns NaN when ``ei`` is 0 (no signal: the index is not defined).

    Examples
    --------
    >>> round(deviation_index(200.0, 100.0), 2)  # twice the target dose: +3 dB
    3.01

    Raises
    ------
    ValueError
        When ``target_ei`` is not a positive finite number or ``ei`` is negative or not
        finite.
    """
    if not (math.isfinite(float(target_ei)) and target_ei > 0):
        raise ValueError(f"deviation_index: target EI must be positive, got {target_ei!r}")
    if not (math.isfinite(float(ei)) and ei >= 0):
        raise ValueError(f"deviation_index: EI must be >= 0 and finite, got {ei!r}")
    if ei == 0:
        return float("nan")
    return 10.0 * math.log10(float(ei) / float(target_ei))


def linear_window(center: float, width: float, out_bits: int = 8
                  ) -> tuple[float, float, float, float]:
    """DICOM linear VOI function (PS3.3 C.11.2.1.2) as ``(x_low, x_high, slope, intercept)``.

    ``y = 0`` for ``x <= x_low``, ``ymax`` for ``x > x_high``, otherwise
    ``clip(floor(x * slope + intercept + 0.5), 0, ymax)``; the width is clamped to >= 1.
    """
    if not (math.isfinite(center) and math.isfinite(width)):
        raise ValueError("voi: center and width must be finite")
    w = max(float(width), 1.0)
    c = float(center)
    ymax = float((1 << out_bits) - 1)
    d = w - 1.0 if w > 1.0 else 1.0
    slope = ymax / d
    intercept = (0.5 - (c - 0.5) / d) * ymax
    return c - 0.5 - (w - 1.0) / 2.0, c - 0.5 + (w - 1.0) / 2.0, slope, intercept


def voi_lut(center: float, width: float, n_in: int, *, out_bits: int = 8,
            invert: bool = False) -> np.ndarray:
    """DICOM linear VOI LUT (PS3.3 C.11.2.1.2) for input codes ``0 .. n_in - 1``.

    Parameters
    ----------
    center, width : float
        Window center and width in input codes (width is clamped to >= 1).
    n_in : int
        Number of input codes (4096 for 12-bit, 65536 for 16-bit).
    out_bits : int
        8 (uint8 table) or 16 (uint16 table).
    invert : bool
        Invert the output (MONOCHROME1 look).

    Returns
    -------
    numpy.ndarray
        Table of ``n_in`` entries.

    Examples
    --------
    >>> voi_lut(2048, 4096, 4096)[[0, 2048, 4095]].tolist()
    [0, 128, 255]
    """
    if out_bits not in (8, 16):
        raise ValueError("voi_lut: out_bits must be 8 or 16")
    xlo, xhi, slope, intercept = linear_window(center, width, out_bits)
    ymax = float((1 << out_bits) - 1)
    x = np.arange(n_in, dtype=np.float64)
    y = np.clip(x * slope + (intercept + 0.5), 0.0, ymax)
    y = np.where(x <= xlo, 0.0, y)
    y = np.where(x > xhi, ymax, y)
    y = np.floor(y)
    if invert:
        y = ymax - y
    return y.astype(np.uint8 if out_bits == 8 else np.uint16)
