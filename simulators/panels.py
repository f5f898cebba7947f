"""Flat-panel formats of the detector simulator, as :class:`~dios.devices.backends.PanelMode`.

Formats
-------
============ ============= ======== ==== ========= ===================================
name          rows x cols   pitch    bits readout   class
============ ============= ======== ==== ========= ===================================
FLUORO_1024   1024 x 1024   0.194 mm 14   0.05 s    dynamic (fluoroscopy), 19.9 cm square
CSI_3543      2800 x 2304   0.150 mm 16   0.8 s     35 x 43 cm cassette, portrait
CSI_4343      3072 x 3072   0.139 mm 16   1.0 s     43 x 43 cm
CSI_4343_HR   4288 x 4288   0.100 mm 16   1.5 s     43 x 43 cm, high resolution
============ ============= ======== ==== ========= ===================================

``CSI_3543`` is portrait: 2800 rows (42.0 cm, the 43 cm side) by 2304 columns (34.6 cm).

Dose model
----------
The simulator's signal is linear in air kerma at the detector:
``signal [ADU] = counts_per_ugy * K [uGy] * gain`` above the pixel's dark offset.
``counts_per_ugy`` is also the exposure-index calibration factor (corrected counts per
uGy at RQA5). It is chosen so that

* a typical radiograph (about 1-10 uGy behind anatomy, 5-30 uGy direct exposure) uses a
  good part of the range,
* direct (unattenuated) exposure saturates only at high dose: the 16-bit CsI panels
  (offset about 1 200 ADU, 1 000 ADU/uGy) clip at about 60 uGy, the 14-bit dynamic panel
  (offset about 500 ADU, 1 200 ADU/uGy) at about 13 uGy.

Quantum noise follows from the number of detected quanta per pixel,
``quanta_per_ugy = FLUENCE_RQA5 * pitch_mm**2 * ABSORPTION`` (29 653 photons per mm^2
per uGy at RQA5, IEC 62220-1; about 60 % absorbed and converted in CsI): each detected
quantum is worth ``counts_per_ugy / quanta_per_ugy`` ADU, so the variance in ADU is that
factor times the signal.
"""

from __future__ import annotations

from dios.devices.backends import PanelMode

#: Photons per mm^2 per uGy of air kerma for the RQA5 beam quality (IEC 62220-1).
FLUENCE_RQA5 = 29_653.0
#: Fraction of incident quanta absorbed and converted by the CsI scintillator.
ABSORPTION = 0.6

#: Electronic (read) noise in ADU, by bit depth.
READ_NOISE_ADU = {14: 2.5, 16: 6.0}
#: Mean dark offset in ADU, by bit depth.
OFFSET_ADU = {14: 500.0, 16: 1200.0}

PANELS: dict[str, PanelMode] = {
    m.name: m
    for m in (
        PanelMode("CSI_4343", 3072, 3072, 0.139, 16,
                  "43x43 cm CsI static panel, 139 um", counts_per_ugy=1000.0,
                  readout_s=1.0, aed=True),
        PanelMode("CSI_3543", 2800, 2304, 0.150, 16,
                  "35x43 cm CsI cassette-size panel, portrait, 150 um", counts_per_ugy=1000.0,
                  readout_s=0.8, aed=True),
        PanelMode("CSI_4343_HR", 4288, 4288, 0.100, 16,
                  "43x43 cm CsI static panel, 100 um", counts_per_ugy=1000.0,
                  readout_s=1.5, aed=True),
        PanelMode("FLUORO_1024", 1024, 1024, 0.194, 14,
                  "20x20 cm dynamic panel, 194 um, 30 fps", counts_per_ugy=1200.0,
                  readout_s=0.05, aed=False),
    )
}

#: The mode a simulated detector starts in.
DEFAULT_PANEL = "CSI_4343"


def quanta_per_ugy(mode: PanelMode) -> float:
    """Detected X-ray quanta per pixel per uGy of air kerma (RQA5)."""
    return FLUENCE_RQA5 * mode.pixel_pitch_mm ** 2 * ABSORPTION


def adu_per_quantum(mode: PanelMode) -> float:
    """Signal (ADU) of one detected quantum: the quantum-noise variance per ADU of signal."""
    return mode.counts_per_ugy / quanta_per_ugy(mode)


def max_adu(mode: PanelMode) -> int:
    """Largest value a pixel of ``mode`` can hold."""
    return (1 << mode.bits) - 1


def saturation_ugy(mode: PanelMode) -> float:
    """Air kerma (uGy) at which an average pixel clips."""
    return (max_adu(mode) - OFFSET_ADU[mode.bits]) / mode.counts_per_ugy


def get_panel(name: str) -> PanelMode:
    """The panel format called ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        return PANELS[name]
    except KeyError:
        raise KeyError(f"unknown panel {name!r}; known: {', '.join(PANELS)}") from None
