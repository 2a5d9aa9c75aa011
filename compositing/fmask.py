"""HLS v2 Fmask decoding (uint8 quality layer, fill 255).

Bits (HLS v2 user guide, table 9): 0 cirrus (reserved, unused), 1 cloud, 2 adjacent to cloud/shadow,
3 cloud shadow, 4 snow/ice, 5 water, bits 6-7 aerosol level (0 climatology, 1 low, 2 moderate, 3 high).
Bits are only meaningful where the value is not the fill 255. A pixel is *clear* when it is not fill and
none of the masked bits is set (and, for the high-aerosol option, its aerosol level is not 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.constants import FMASK_FILL

BIT_CIRRUS = 0
BIT_CLOUD = 1
BIT_ADJACENT = 2
BIT_SHADOW = 3
BIT_SNOW = 4
BIT_WATER = 5
AEROSOL_SHIFT = 6
AEROSOL_HIGH = 3

BIT_NAMES = {BIT_CIRRUS: "cirrus", BIT_CLOUD: "cloud", BIT_ADJACENT: "adjacent", BIT_SHADOW: "shadow",
             BIT_SNOW: "snow_ice", BIT_WATER: "water"}


@dataclass(frozen=True)
class FmaskRule:
    """Which Fmask conditions make an observation invalid.

    Cloud, adjacent and shadow are always masked. ``mask_snow`` adds bit 4, ``mask_water`` bit 5 and
    ``mask_high_aerosol`` the aerosol level 3 (bits 6-7 both set). Fill (255) is always invalid.
    """

    mask_snow: bool = False
    mask_water: bool = False
    mask_high_aerosol: bool = False

    @property
    def masked_bits(self) -> list[int]:
        """Single bits tested (aerosol is reported separately by :meth:`describe`)."""
        bits = [BIT_CLOUD, BIT_ADJACENT, BIT_SHADOW]
        if self.mask_snow:
            bits.append(BIT_SNOW)
        if self.mask_water:
            bits.append(BIT_WATER)
        return bits

    def describe(self) -> str:
        """Human/tag form, e.g. ``"1:cloud,2:adjacent,3:shadow,6-7:aerosol_high"``."""
        parts = [f"{b}:{BIT_NAMES[b]}" for b in self.masked_bits]
        if self.mask_high_aerosol:
            parts.append("6-7:aerosol_high")
        return ",".join(parts)

    def lookup_table(self) -> np.ndarray:
        """256-entry bool table: ``table[fmask]`` is True where the observation is clear."""
        values = np.arange(256, dtype=np.uint16)
        bitmask = 0
        for b in self.masked_bits:
            bitmask |= 1 << b
        clear = (values & bitmask) == 0
        if self.mask_high_aerosol:
            clear &= (values >> AEROSOL_SHIFT) != AEROSOL_HIGH
        clear[FMASK_FILL] = False
        return clear


def clear_mask(fmask: np.ndarray, rule: FmaskRule = FmaskRule(), out: np.ndarray | None = None) -> np.ndarray:
    """Bool array: True where ``fmask`` (uint8) is not fill and no masked condition holds.

    Equal to ``rule.lookup_table()[fmask]`` (tested for all 256 values), computed with two or three
    vectorised bit operations instead of a gather (about 10x faster on 1 Mpx). Fill 255 has every bit set,
    so the always-masked cloud bit rules it out. ``out`` (bool, same shape) receives the result.
    """
    if fmask.dtype != np.uint8:
        raise TypeError(f"Fmask must be uint8, got {fmask.dtype}")
    bitmask = 0
    for b in rule.masked_bits:
        bitmask |= 1 << b
    out = np.empty(fmask.shape, np.bool_) if out is None else out
    bits = out.view(np.uint8)  # the masked bits go into out's own bytes, then become the test result
    np.bitwise_and(fmask, np.uint8(bitmask), out=bits)
    np.equal(bits, 0, out=out)
    if rule.mask_high_aerosol:
        high = np.uint8(AEROSOL_HIGH << AEROSOL_SHIFT)
        out &= np.bitwise_and(fmask, high) != high
    return out


def bit_fractions(fmask: np.ndarray) -> dict[str, float]:
    """Fraction of the valid (non-fill) pixels with each Fmask condition set (0..1).

    Keys: the single-bit names of :data:`BIT_NAMES`, ``aerosol_<level>`` for the four aerosol levels,
    and ``valid_pixels`` / ``fill_pixels`` (counts, not fractions).
    """
    if fmask.dtype != np.uint8:
        raise TypeError(f"Fmask must be uint8, got {fmask.dtype}")
    hist = np.bincount(fmask.ravel(), minlength=256).astype(np.int64)
    fill = int(hist[FMASK_FILL])
    hist[FMASK_FILL] = 0
    n_valid = int(hist.sum())
    values = np.arange(256)
    out: dict[str, float] = {"valid_pixels": n_valid, "fill_pixels": fill}
    denom = max(n_valid, 1)
    for bit, name in BIT_NAMES.items():
        out[name] = float(hist[(values >> bit) & 1 == 1].sum()) / denom
    for level, name in enumerate(("climatology", "low", "moderate", "high")):
        out[f"aerosol_{name}"] = float(hist[(values >> AEROSOL_SHIFT) == level].sum()) / denom
    return out
