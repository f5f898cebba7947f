"""Multi-scale enhancement on a Laplacian pyramid of log-exposure data.

The image ``G0`` (natural log of the corrected signal) is decomposed into detail levels
``d_k = G_k - up2(G_{k+1})`` and a residual ``G_n`` (``down2``/``up2`` as in
:mod:`processing._kernels`: 2x2 box reduction, bilinear expansion; the decomposition is
exact, so identity transfers give the input back). Large-scale work happens only on the
reduced levels; the finest level is never materialised: each level is rebuilt as
``C_k = up2(C_{k+1}) + f_k(d_k)`` in one pass, and the pipeline fuses level 0 with the
presentation mapping.

Per-level transfer ``f_k`` (odd and monotonic, evaluated in the kernels without tables)::

    f_k(x) = G * x * (1 + b) / (1 + b |x| / a) * (1 - z * t**4 / (t**4 + x**4))

* ``x (1 + b) / (1 + b |x| / a)`` is the compressive, MUSICA-like part: slope ``1 + b``
  for small details, ``a`` (:data:`AMPLITUDE` log units) maps onto itself, so small
  details gain more than large ones; ``b = 2 (1 - p) / p`` from the profile's
  ``compression`` ``p`` (``p = 1``: linear).
* ``G`` is the level gain, times ``1 + edge`` on the two finest levels (edge enhancement).
* The last factor is the noise gate: ``t = noise_k * sigma_k`` with ``sigma_0`` estimated
  from the image (1.4826 MAD of the finest details inside the field) and
  ``sigma_k = sigma_0 / 2**k``; ``z`` is chosen so that the slope at 0 is
  ``1 - noise``: details well below the noise level (quantum noise in flat areas) are
  attenuated, never amplified, while details above ``t`` get the full gain.

The residual is compressed around its median in the field by the profile's latitude
factor (latitude compression).
"""

from __future__ import annotations

import math

import numpy as np

from processing import _kernels as K
from processing.profiles import Profile, get_profile

__all__ = ["AMPLITUDE", "Pyramid", "transfer_params", "transfer", "identity_params",
           "enhance", "n_levels", "log_lut"]

#: Detail amplitude (log units) that the compressive transfer maps onto itself.
AMPLITUDE = 1.0
#: Smallest side of the coarsest pyramid level.
MIN_LEVEL_SIDE = 16
#: Levels with fewer pixels run single-threaded (waking the workers costs more).
SERIAL_PIXELS = 300_000
#: Finest-level samples for the noise estimate.
NOISE_SAMPLES = 20_000
_DUMMY_MASK = np.zeros((1, 1), np.uint8)


def log_lut() -> np.ndarray:
    """float32 table ``ln(max(c, 1))`` for the 65536 uint16 codes (the processing domain)."""
    c = np.arange(65536, dtype=np.float64)
    return np.log(np.maximum(c, 1.0)).astype(np.float32)


def n_levels(shape: tuple[int, int], max_levels: int) -> int:
    """Number of reduced levels for ``shape``: the coarsest is at least 16 pixels wide."""
    side = min(shape)
    n = 0
    while n < max_levels and math.ceil(side / 2) >= MIN_LEVEL_SIDE:
        side = math.ceil(side / 2)
        n += 1
    return n


def transfer_params(level: int, profile: Profile, noise_sigma: float) -> np.ndarray:
    """Kernel parameters ``(g, kb, t4, nz)`` of the transfer ``f_level``.

    ``f(x) = g * x / (1 + kb |x|) * (1 - nz * t4 / (t4 + x**4))`` (see the module
    docstring for the meaning; ``g`` includes ``1 + b``).
    """
    p = profile.compression
    b = 2.0 * (1.0 - p) / p
    g = profile.gain(level) * ((1.0 + profile.edge) if level < 2 else 1.0) * (1.0 + b)
    t = max(profile.noise_k * max(float(noise_sigma), 0.0) / (2 ** level), 1e-6)
    target = 1.0 - profile.noise  # slope at 0
    nz = 1.0 - target / g if g > target else 0.0
    return np.array([g, b / AMPLITUDE, t ** 4, nz], np.float64)


def identity_params() -> np.ndarray:
    """Transfer parameters of the identity (for tests and for disabling a level)."""
    return np.array([1.0, 0.0, 1.0, 0.0], np.float64)


def transfer(x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """NumPy evaluation of the transfer with kernel parameters ``params``."""
    g, kb, t4, nz = (float(v) for v in params)
    x = np.asarray(x, np.float64)
    return g * x / (1.0 + kb * np.abs(x)) * (1.0 - nz * t4 / (t4 + x ** 4))


def _finite_median(vals: np.ndarray) -> np.float32:
    """``np.median`` of the finite values of a float32 array, as float32 (NaN when there
    is none); ``vals`` is reordered. The values are compacted by a kernel and selected by
    NumPy's introselect (several times faster than a compiled selection)."""
    m = int(K.compact_finite(vals))
    if m == 0:
        return np.float32(np.nan)
    part = vals[:m]
    k = m // 2
    part.partition(k)
    hi = part[k]
    if m % 2 == 1:
        return hi
    return (part[:k].max() + hi) / np.float32(2.0)


def _down2(src: np.ndarray, out: np.ndarray) -> None:
    (K.down2 if out.size >= SERIAL_PIXELS else K.down2_serial)(src, out)


def _collapse(g, g1, c1, tr, out) -> None:
    (K.collapse_level if out.size >= SERIAL_PIXELS else K.collapse_level_serial)(
        g, g1, c1, tr, out)


class Pyramid:
    """Preallocated reduced levels for frames of one shape.

    ``g[k]`` holds ``G_{k+1}`` (level 1 is half resolution) and ``c[k]`` the collapsed
    ``C_{k+1}``; level 0 (full resolution) is never stored.
    """

    def __init__(self, shape: tuple[int, int], max_levels: int) -> None:
        self.shape = tuple(shape)
        self.levels = n_levels(self.shape, max_levels)
        if self.levels < 1:
            raise ValueError(f"image {shape} is too small for a pyramid (min side "
                             f"{2 * MIN_LEVEL_SIDE})")
        shapes = []
        h, w = self.shape
        for _ in range(self.levels):
            h, w = (h + 1) // 2, (w + 1) // 2
            shapes.append((h, w))
        self.shapes = shapes
        self.g = [np.empty(s, np.float32) for s in shapes]
        self.c = [np.empty(s, np.float32) for s in shapes]
        n = max(1, min(NOISE_SAMPLES, shapes[0][0] * shapes[0][1]))
        self._samples = np.empty(n, np.float32)

    def build_from_u16(self, src: np.ndarray, lut: np.ndarray) -> None:
        """Reduce ``lut[src]`` (uint16 frame, float32 table) into the levels."""
        K.down2_lut(src, lut, self.g[0])
        self.build_rest()

    def build_rest(self) -> None:
        """Reduce level 1 (already in ``g[0]``) into the coarser levels."""
        for k in range(1, self.levels):
            _down2(self.g[k - 1], self.g[k])

    def build_from_f32(self, img: np.ndarray) -> None:
        """Reduce a float32 image into the levels."""
        _down2(img, self.g[0])
        self.build_rest()

    def noise_sigma(self, src: np.ndarray, lut: np.ndarray | None,
                    mask: np.ndarray | None) -> float:
        """Robust noise sigma of the finest details (1.4826 * MAD) inside the mask."""
        h, w = self.shape
        m = _DUMMY_MASK if mask is None else mask.view(np.uint8)
        step = max(1, int(math.sqrt(h * w / self._samples.size)))
        if lut is None:
            n = K.abs_detail_samples(src, self.g[0], step, m, 1, self._samples)
        else:
            n = K.abs_detail_samples_lut(src, lut, self.g[0], step, m, 1, self._samples)
        if n == 0:
            return 0.0
        med = _finite_median(self._samples[:n])
        # float32 arithmetic, as for the numpy median of float32 samples
        return float(1.4826 * np.float32(med)) if med == med else 0.0

    def collapse(self, profile: Profile, noise_sigma: float,
                 mask: np.ndarray | None = None) -> None:
        """Fill ``c`` from ``g``: latitude on the residual, transfers on levels 1..n-1."""
        n = self.levels
        gn = self.g[n - 1]
        if mask is not None:
            s = 2 ** n
            mm = mask[::s, ::s][: gn.shape[0], : gn.shape[1]]
            vals = gn[: mm.shape[0], : mm.shape[1]][mm]
            mean = float(np.median(vals)) if vals.size else float(np.median(gn))
        else:
            mean = float(np.median(gn))
        K.latitude(gn, np.float32(mean), np.float32(profile.latitude), self.c[n - 1])
        for k in range(n - 2, -1, -1):
            tr = transfer_params(k + 1, profile, noise_sigma)
            _collapse(self.g[k], self.g[k + 1], self.c[k + 1], tr, self.c[k])


def enhance(image: np.ndarray, profile: Profile | str = "default", *,
            field_mask: np.ndarray | None = None, noise_sigma: float | None = None
            ) -> np.ndarray:
    """Enhance a log-exposure image (standalone; the pipeline fuses the last level).

    Parameters
    ----------
    image : numpy.ndarray
        2-D float image in log exposure (for example ``log(corrected counts)``), at least
        32x32 and finite.
    profile : Profile or str
        Processing profile.
    field_mask : numpy.ndarray, optional
        bool irradiated-field map (noise estimate and latitude centre come from it).
    noise_sigma : float, optional
        Noise sigma of the finest level (default: estimated from the image).

    Returns
    -------
    numpy.ndarray
        float32 enhanced image of the same shape.

    Examples
    --------
    A small detail gains contrast while a large-scale ramp is compressed (latitude).

    >>> import numpy as np
    >>> img = np.full((256, 256), 8.0, np.float32)
    >>> img[120:124, 120:124] += 0.02
    >>> out = enhance(img, "chest")
    >>> round(float(out[121, 121] - out[60, 60]), 2)
    0.06
    >>> ramp = img + np.linspace(0, 2, 256, dtype=np.float32)[None, :]
    >>> round(float(np.ptp(enhance(ramp, "chest"))), 1)
    1.2
    """
    prof = get_profile(profile)
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype.kind != "f":
        raise TypeError("enhance: expected a 2-D float array")
    if not np.all(np.isfinite(image)):
        raise ValueError("enhance: image contains NaN or infinity")
    img = np.ascontiguousarray(image, dtype=np.float32)
    mask = None
    if field_mask is not None:
        mask = np.ascontiguousarray(field_mask, dtype=bool)
        if mask.shape != img.shape:
            raise ValueError(f"enhance: field_mask {mask.shape} != image {img.shape}")
        if not mask.any():
            mask = None
    pyr = Pyramid(img.shape, prof.levels)
    pyr.build_from_f32(img)
    sigma = pyr.noise_sigma(img, None, mask) if noise_sigma is None else float(noise_sigma)
    pyr.collapse(prof, sigma, mask)
    out = np.empty_like(img)
    _collapse(img, pyr.g[0], pyr.c[0], transfer_params(0, prof, sigma), out)
    return out
