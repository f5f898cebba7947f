"""Generated view icons: a body silhouette with the examined region highlighted.

Human icons show a frontal figure (patient's right on the viewer's left, as an AP image
is read); veterinary icons show a quadruped in right lateral view. The projection
(``AP``, ``LAT``, ``VD`` ...) is written at the bottom and the side (``L``/``R``) at the
top right. Icons are PNG, drawn with Pillow, deterministic for a given input.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

#: region -> (x, y, w, h) on a 100 x 100 canvas, on the patient's right side when paired
HUMAN_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "SK": (40, 2, 20, 20), "NK": (44, 19, 12, 8), "CS": (45, 18, 10, 10),
    "TS": (44, 25, 12, 18), "LS": (44, 40, 12, 16), "SC": (44, 52, 12, 9),
    "CH": (35, 23, 30, 20), "RB": (35, 25, 13, 18), "AB": (36, 40, 28, 18),
    "PV": (35, 52, 30, 12), "HP": (34, 54, 14, 10), "SH": (30, 21, 12, 10),
    "CL": (36, 21, 14, 5), "HM": (26, 26, 10, 16), "EL": (22, 39, 10, 8),
    "FA": (18, 44, 10, 12), "WR": (15, 54, 9, 6), "HD": (11, 57, 12, 12),
    "FM": (38, 60, 12, 18), "KN": (37, 74, 12, 8), "LG": (37, 80, 11, 12),
    "AK": (36, 89, 10, 6), "FT": (32, 92, 14, 8), "CA": (38, 92, 8, 8),
}
#: region -> (x, y, w, h) on the quadruped canvas (head to the right)
ANIMAL_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "SK": (74, 16, 22, 20), "CS": (62, 24, 14, 14), "TH": (50, 32, 20, 24),
    "AB": (30, 32, 20, 24), "PV": (14, 30, 16, 22), "TL": (24, 28, 40, 10),
    "SP": (18, 28, 50, 10), "SH": (58, 40, 12, 12), "EL": (60, 54, 10, 10),
    "AN": (60, 62, 10, 12), "CP": (60, 74, 10, 10), "FL": (58, 46, 12, 38),
    "FM": (16, 44, 12, 14), "ST": (16, 56, 10, 10), "TB": (16, 64, 10, 12),
    "TR": (16, 74, 10, 10), "HL": (14, 44, 14, 40),
}

_BG = (24, 28, 36, 255)
_BODY = (150, 160, 175, 255)
_HIGHLIGHT = (255, 150, 40, 255)
_TEXT = (240, 240, 240, 255)


def _human(draw: ImageDraw.ImageDraw, s: float) -> None:
    def p(x: float, y: float) -> tuple[float, float]:
        return x * s, y * s

    w = max(1, round(3 * s))
    draw.ellipse([*p(42, 3), *p(58, 20)], outline=_BODY, width=w)
    draw.line([p(50, 20), p(50, 24)], fill=_BODY, width=w)
    draw.rounded_rectangle([*p(36, 23), *p(64, 56)], radius=4 * s, outline=_BODY, width=w)
    for sign in (-1, 1):
        x0 = 50 + sign * 14
        draw.line([p(x0, 25), p(50 + sign * 22, 42), p(50 + sign * 31, 58)], fill=_BODY, width=w)
        draw.line([p(50 + sign * 7, 56), p(50 + sign * 8, 78), p(50 + sign * 9, 95)],
                  fill=_BODY, width=w)


def _animal(draw: ImageDraw.ImageDraw, s: float, cat: bool) -> None:
    def p(x: float, y: float) -> tuple[float, float]:
        return x * s, y * s

    w = max(1, round(3 * s))
    draw.ellipse([*p(14, 30), *p(72, 56)], outline=_BODY, width=w)
    draw.line([p(66, 36), p(78, 26)], fill=_BODY, width=w)
    draw.ellipse([*p(74, 16), *p(94, 34)], outline=_BODY, width=w)
    ear = [p(78, 18), p(80, 8 if cat else 12), p(84, 17)]
    draw.line(ear, fill=_BODY, width=w)
    for x in (22, 64):
        draw.line([p(x, 52), p(x, 84)], fill=_BODY, width=w)
    draw.line([p(15, 38), p(4, 30 if cat else 40), p(2, 18 if cat else 44)], fill=_BODY, width=w)


def render_icon(region: str, position: str, laterality: str, patient_type: str,
                size: int = 64) -> bytes:
    """Draw one view icon and return it as PNG bytes.

    Parameters
    ----------
    region : str
        The view's region code (``SK``, ``CH``, ``HD`` ...; see the tables above).
    position : str
        The projection text (``AP``, ``LAT`` ...).
    laterality : str
        ``L``/``R`` mirror a paired region and are written on the icon; ``U``/``B`` not.
    patient_type : str
        ``Human`` for the frontal figure; anything else draws a quadruped (``Cat`` with
        pointed ears and a raised tail).
    size : int
        Edge length in pixels (16-1024).
    """
    if not 16 <= size <= 1024:
        raise ValueError("icon size must be 16..1024 pixels")
    img = Image.new("RGBA", (size, size), _BG)
    draw = ImageDraw.Draw(img)
    s = size / 100.0
    human = patient_type == "Human"
    regions = HUMAN_REGIONS if human else ANIMAL_REGIONS
    box = regions.get(region)
    if box is not None:
        x, y, w, h = box
        if human and laterality == "L":
            x = 100 - x - w
        draw.ellipse([x * s, y * s, (x + w) * s, (y + h) * s], fill=_HIGHLIGHT)
    if human:
        _human(draw, s)
    else:
        _animal(draw, s, patient_type == "Cat")
    font = ImageFont.load_default(size=max(8, round(14 * s)))
    draw.text((2 * s, 99 * s), position[:6], fill=_TEXT, font=font, anchor="lb")
    if laterality in ("L", "R"):
        draw.text((98 * s, 2 * s), laterality, fill=_HIGHLIGHT, font=font, anchor="rt")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
