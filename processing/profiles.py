"""Processing profiles: the parameters of the pipeline per body part.

A profile is chosen by the catalog's ``img_proc_id`` per view. :func:`get_profile`
accepts a profile name from :data:`PROFILES` or a catalog id such as
``View_DX_T_A_SK_AP_00`` (its anatomy token ``SK`` maps to ``skull``; see
:data:`CATALOG_TOKENS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["Profile", "PROFILES", "CATALOG_TOKENS", "get_profile"]


@dataclass(frozen=True)
class Profile:
    """Parameters of one processing profile.

    Attributes
    ----------
    name : str
        Profile name.
    level_gains : tuple of float
        Detail gain per pyramid level, finest first (level 0 is full resolution); levels
        beyond the tuple use its last value. 1.0 leaves the level unchanged.
    compression : float
        Exponent ``p`` of the compressive per-level transfer ``sign(x) a |x/a|^p`` (0 < p
        <= 1): small details gain more than large ones. 1.0 is linear.
    edge : float
        Extra gain of the two finest levels above the noise threshold (edge enhancement).
    noise : float
        Noise suppression strength in [0, 1]: details below ``noise_k`` noise sigmas are
        attenuated towards ``1 - noise`` of their linear value instead of amplified.
    noise_k : float
        Noise threshold in multiples of the estimated noise sigma of the finest level.
    latitude : float
        Residual (coarsest level) contrast factor in (0, 1]: below 1 compresses the
        large-scale dynamic range (latitude compression).
    levels : int
        Maximum number of pyramid levels (the coarsest is at least 16 pixels wide).
    output_bits : int
        Bits stored of the presentation image: 12 or 16.
    window_percentiles : tuple of float
        Percentiles of the anatomy histogram that bound the automatic window.
    window_margin : float
        Relative widening of the automatic window on each side.
    direct_exposure_ratio : float
        Pixels brighter than this fraction of the direct-exposure level are direct
        exposure, excluded from the window.
    ei_direct_exposure_ratio : float
        The same for the exposure index (closer to 1: thin anatomy near the skin line
        belongs to the value of interest).
    """

    name: str
    level_gains: tuple[float, ...] = (1.0, 1.2, 1.4, 1.4, 1.2, 1.0)
    compression: float = 0.7
    edge: float = 0.3
    noise: float = 0.5
    noise_k: float = 3.0
    latitude: float = 0.6
    levels: int = 7
    output_bits: int = 12
    window_percentiles: tuple[float, float] = (0.5, 99.5)
    window_margin: float = 0.05
    direct_exposure_ratio: float = 0.8
    ei_direct_exposure_ratio: float = 0.9
    tags: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.level_gains or any(g <= 0 for g in self.level_gains):
            raise ValueError(f"profile {self.name}: level_gains must be positive")
        if not 0.0 < self.compression <= 1.0:
            raise ValueError(f"profile {self.name}: compression must be in (0, 1]")
        if self.edge < 0:
            raise ValueError(f"profile {self.name}: edge must be >= 0")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"profile {self.name}: noise must be in [0, 1]")
        if self.noise_k <= 0:
            raise ValueError(f"profile {self.name}: noise_k must be > 0")
        if not 0.0 < self.latitude <= 1.0:
            raise ValueError(f"profile {self.name}: latitude must be in (0, 1]")
        if not 1 <= self.levels <= 12:
            raise ValueError(f"profile {self.name}: levels must be in 1..12")
        if self.output_bits not in (12, 16):
            raise ValueError(f"profile {self.name}: output_bits must be 12 or 16")
        lo, hi = self.window_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"profile {self.name}: window_percentiles must satisfy "
                             "0 <= lo < hi <= 100")
        for r in (self.direct_exposure_ratio, self.ei_direct_exposure_ratio):
            if not 0.0 < r < 1.0:
                raise ValueError(f"profile {self.name}: direct exposure ratios must be in "
                                 "(0, 1)")

    def gain(self, level: int) -> float:
        """Detail gain of pyramid level ``level`` (0 = finest)."""
        g = self.level_gains
        return g[level] if level < len(g) else g[-1]

    def with_(self, **changes: object) -> Profile:
        """A copy with some parameters changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("default"),
        # Large dynamic range (lungs vs mediastinum): strong latitude compression,
        # mid-scale contrast for vessels.
        Profile("chest", level_gains=(1.0, 1.2, 1.5, 1.6, 1.3, 1.0), compression=0.65,
                edge=0.25, noise=0.5, latitude=0.45),
        # Bone detail, moderate latitude.
        Profile("skull", level_gains=(1.1, 1.3, 1.4, 1.3, 1.1, 1.0), compression=0.7,
                edge=0.4, noise=0.4, latitude=0.65),
        # Trabecular detail: fine levels and edges, little compression.
        Profile("extremity", level_gains=(1.2, 1.5, 1.5, 1.2, 1.0, 1.0), compression=0.75,
                edge=0.6, noise=0.35, latitude=0.8, window_percentiles=(0.2, 99.8)),
        # Low contrast soft tissue, noisier: more noise suppression, mid-scale gain.
        Profile("abdomen", level_gains=(1.0, 1.1, 1.4, 1.5, 1.3, 1.0), compression=0.7,
                edge=0.15, noise=0.7, latitude=0.6),
        # Thick-thin transitions (cervical to lumbar): strong latitude compression.
        Profile("spine", level_gains=(1.0, 1.3, 1.5, 1.5, 1.2, 1.0), compression=0.65,
                edge=0.35, noise=0.5, latitude=0.5),
        # Low dose: strong noise suppression, gentle enhancement.
        Profile("pediatric", level_gains=(0.9, 1.1, 1.3, 1.3, 1.1, 1.0), compression=0.75,
                edge=0.15, noise=0.8, noise_k=3.5, latitude=0.65),
    )
}

#: Anatomy tokens of catalog ids (``View_DX_T_<age>_<anatomy>_<view>_<n>``) -> profile.
CATALOG_TOKENS: dict[str, str] = {
    "SK": "skull", "SKULL": "skull", "HEAD": "skull", "FACE": "skull", "SINUS": "skull",
    "CH": "chest", "CHEST": "chest", "TH": "chest", "THORAX": "chest", "LUNG": "chest",
    "RIB": "chest", "RIBS": "chest",
    "AB": "abdomen", "ABD": "abdomen", "ABDOMEN": "abdomen", "PELVIS": "abdomen",
    "PE": "abdomen", "KUB": "abdomen",
    "SP": "spine", "SPINE": "spine", "CS": "spine", "TS": "spine", "LS": "spine",
    "CSPINE": "spine", "TSPINE": "spine", "LSPINE": "spine",
    "EX": "extremity", "UE": "extremity", "LE": "extremity", "HAND": "extremity",
    "FOOT": "extremity", "KNEE": "extremity", "ELBOW": "extremity", "WRIST": "extremity",
    "ANKLE": "extremity", "SHOULDER": "extremity", "HIP": "extremity", "FEMUR": "extremity",
    "ARM": "extremity", "LEG": "extremity",
}
#: Age tokens of catalog ids that select the pediatric profile.
PEDIATRIC_TOKENS = frozenset({"P", "PED", "C", "CHILD", "INF", "NB"})


def get_profile(name: str | Profile) -> Profile:
    """Return the profile for a profile name or a catalog ``img_proc_id``.

    Parameters
    ----------
    name : str or Profile
        A key of :data:`PROFILES` (case-insensitive), or a catalog id whose
        underscore-separated tokens contain an anatomy token of :data:`CATALOG_TOKENS`
        (a pediatric age token selects ``pediatric``; a catalog id of another anatomy
        selects ``default``). A :class:`Profile` is returned as is.

    Raises
    ------
    KeyError
        When the name is neither, listing the known profile names.

    Examples
    --------
    >>> get_profile("Chest").name, get_profile("View_DX_Adult_HAND_PA").name
    ('chest', 'extremity')
    """
    if isinstance(name, Profile):
        return name
    if not isinstance(name, str) or not name.strip():
        raise KeyError(f"unknown processing profile {name!r}; known: {sorted(PROFILES)}")
    key = name.strip().lower()
    if key in PROFILES:
        return PROFILES[key]
    tokens = [t.upper() for t in name.strip().split("_")]
    if len(tokens) >= 3 and tokens[0] == "VIEW":
        if any(t in PEDIATRIC_TOKENS for t in tokens[2:4]):
            return PROFILES["pediatric"]
        for t in tokens[2:]:
            if t in CATALOG_TOKENS:
                return PROFILES[CATALOG_TOKENS[t]]
        # A well-formed catalog id of an anatomy without a dedicated profile.
        return PROFILES["default"]
    raise KeyError(f"unknown processing profile {name!r}; known: {sorted(PROFILES)} "
                   "or a catalog id View_<modality>_<...>_<anatomy>_... with anatomy in "
                   f"{sorted(CATALOG_TOKENS)}")
