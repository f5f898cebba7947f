"""The same pipeline stages composed from OpenCV primitives, the way a user would write it.

This is the bench's peer, not part of the engine. Stages:

1. corrections: float32 ``(raw - offset) * gain`` with ``cv2.subtract``/``cv2.multiply``,
   defects replaced by a 5x5 median (``cv2.medianBlur``);
2. collimation: 4x ``cv2.resize`` (area) to 8 bit, ``cv2.Canny`` and
   ``cv2.HoughLinesP``; the innermost strong line near each side bounds the field,
   filled with ``cv2.fillPoly``;
3. window and EI: ``cv2.log`` and ``cv2.calcHist`` (16384 bins) percentiles over the
   field, direct exposure excluded; EI from the calcHist median of the corrected frame;
4. enhancement: Laplacian pyramid with ``cv2.pyrDown``/``cv2.pyrUp`` (6 levels), the same
   compressive gain per level with whole-array NumPy/OpenCV arithmetic, latitude
   compression of the residual, collapse;
5. output: scaling to 12 bit, ``cv2.LUT`` (65536 entries) to the 8-bit preview,
   ``cv2.rotate`` when asked.
"""

from __future__ import annotations

import time

import cv2
import numpy as np


def _percentile(hist: np.ndarray, lo: float, hi: float, q: float) -> float:
    cum = np.cumsum(hist)
    b = int(np.searchsorted(cum, q / 100.0 * cum[-1]))
    return lo + (b + 0.5) * (hi - lo) / hist.size


def _collimation(corr: np.ndarray) -> np.ndarray:
    h, w = corr.shape
    small = cv2.resize(corr, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    small = cv2.log(np.maximum(small.astype(np.float32), 1.0))
    s8 = cv2.normalize(small, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    edges = cv2.Canny(s8, 40, 120)
    lines = cv2.HoughLinesP(edges, 1, np.pi / 180, threshold=80,
                            minLineLength=min(h, w) // 16, maxLineGap=10)
    sh, sw = s8.shape
    left, right, top, bottom = 0.0, sw - 1.0, 0.0, sh - 1.0
    if lines is not None:
        for x1, y1, x2, y2 in lines.reshape(-1, 4):
            if abs(x2 - x1) < abs(y2 - y1):  # vertical blade
                x = 0.5 * (x1 + x2)
                if x < sw / 3:
                    left = max(left, x)
                elif x > 2 * sw / 3:
                    right = min(right, x)
            else:
                y = 0.5 * (y1 + y2)
                if y < sh / 3:
                    top = max(top, y)
                elif y > 2 * sh / 3:
                    bottom = min(bottom, y)
    mask = np.zeros((h, w), np.uint8)
    poly = np.array([[left, top], [right, top], [right, bottom], [left, bottom]]) * 4
    cv2.fillPoly(mask, [poly.astype(np.int32)], 1)
    return mask


class OpenCVPipeline:
    """OpenCV-composed peer of :class:`processing.pipeline.Pipeline` (no buffer reuse)."""

    def __init__(self, levels: int = 6, gains=(1.3, 1.5, 1.6, 1.4, 1.2, 1.0),
                 compression: float = 0.7, latitude: float = 0.6, noise: float = 0.5) -> None:
        self.levels = levels
        self.gains = gains
        self.b = 2.0 * (1.0 - compression) / compression
        self.latitude = latitude
        self.noise = noise

    def run(self, raw, offset, gain, defect, counts_per_ugy=1000.0, rotate=0):
        t: dict[str, float] = {}
        t0 = t_start = time.perf_counter()

        def lap(name):
            nonlocal t0
            now = time.perf_counter()
            t[name] = (now - t0) * 1e3
            t0 = now

        corr = cv2.multiply(cv2.subtract(raw.astype(np.float32), offset), gain)
        corr = np.clip(corr, 0, 65535).astype(np.uint16)
        med = cv2.medianBlur(corr, 5)
        corr[defect] = med[defect]
        lap("corrections")

        mask = _collimation(corr)
        lap("collimation")

        img = cv2.log(np.maximum(corr.astype(np.float32), 1.0))
        hist = cv2.calcHist([corr], [0], mask, [16384], [0, 65536]).ravel()
        top = _percentile(hist, 0, 65536, 99.5)
        anat = mask.copy()
        anat[corr > 0.8 * top] = 0
        hist = cv2.calcHist([corr], [0], anat, [16384], [0, 65536]).ravel()
        ei = 100.0 * _percentile(hist, 0, 65536, 50) / counts_per_ugy
        lo_v, hi_v = float(np.log(max(_percentile(hist, 0, 65536, 0.5), 1))), float(
            np.log(max(_percentile(hist, 0, 65536, 99.5), 2)))
        lap("window")

        gp = [img]
        for _ in range(self.levels):
            gp.append(cv2.pyrDown(gp[-1]))
        sigma = 1.4826 * float(np.median(np.abs(gp[0] - cv2.pyrUp(
            gp[1], dstsize=gp[0].shape[::-1]))[::8, ::8]))
        res = gp[-1]
        res = cv2.addWeighted(res, self.latitude, res, 0, (1 - self.latitude)
                              * float(np.median(res)))
        for k in range(self.levels - 1, -1, -1):
            up = cv2.pyrUp(gp[k + 1], dstsize=gp[k].shape[::-1])
            d = cv2.subtract(gp[k], up)
            g = self.gains[k] * (1.0 + self.b)
            t4 = (3.0 * sigma / 2 ** k) ** 4
            nz = 1.0 - (1.0 - self.noise) / g
            d2 = cv2.multiply(d, d)
            gate = 1.0 - nz * t4 / (t4 + cv2.multiply(d2, d2))
            f = g * d / (1.0 + self.b * np.abs(d)) * gate
            res = cv2.add(cv2.pyrUp(res, dstsize=gp[k].shape[::-1]), f.astype(np.float32))
        lap("enhancement")

        span = hi_v - lo_v
        lo, hi = lo_v - span, hi_v + span
        img12 = np.clip((hi - res) * (4095.0 / (hi - lo)), 0, 4095).astype(np.uint16)
        c, w = (hi - 0.5 * (lo_v + hi_v)) * 4095.0 / (hi - lo), span * 4095.0 / (hi - lo)
        x = np.arange(65536, dtype=np.float32)
        lut = np.clip(((x - c) / w + 0.5) * 255, 0, 255).astype(np.uint8)
        prev = cv2.LUT(img12, lut)
        if rotate:
            img12 = cv2.rotate(img12, cv2.ROTATE_90_CLOCKWISE)
            prev = cv2.rotate(prev, cv2.ROTATE_90_CLOCKWISE)
        lap("output")
        t["total"] = (time.perf_counter() - t_start) * 1e3
        return img12, prev, ei, t
