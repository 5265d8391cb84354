"""Bjøntegaard delta rate and PSNR (VCEG-M33), with the JVET/JCT-VC piecewise-cubic variant.

``bd_rate`` is the average relative bit-rate difference of the test curve against the anchor
over their common quality range, in percent (negative: the test codec needs fewer bits).
``bd_psnr`` is the average quality difference over their common log-rate range.

Both curves are interpolated in (quality, log-rate) space:

- ``method="pchip"`` (default): piecewise cubic Hermite interpolation, as in the Excel sheets of
  the JCT-VC / JVET common test conditions (JCTVC-L1100, JVET-T2010); it cannot overshoot
  between points, so it stays sane on curves where a global cubic wiggles;
- ``method="cubic"``: the original single cubic polynomial fit of VCEG-M33 (needs 4 points).

Points are sorted; curves must be strictly increasing (more bits, more quality), and must
overlap. A small overlap gives a warning, since the number then averages little of either curve.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

METHODS = ("pchip", "cubic")
#: Overlap below this fraction of either curve's range triggers a warning.
MIN_OVERLAP = 0.25


class BDWarning(UserWarning):
    """The BD figure is computed but averages over little of the curves."""


def _curve(
    rate: Sequence[float], quality: Sequence[float], label: str, method: str
) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"{label}: rate and quality need the same number of points")
    needed = 4 if method == "cubic" else 2
    if len(r) < needed:
        raise ValueError(f"{label}: {method} BD needs at least {needed} points, got {len(r)}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))) or np.any(r <= 0):
        raise ValueError(f"{label}: rates must be positive and all values finite")
    order = np.argsort(r)
    r, q = r[order], q[order]
    if np.any(np.diff(r) <= 0) or np.any(np.diff(q) <= 0):
        raise ValueError(
            f"{label}: the curve is not strictly increasing (quality must rise with rate)"
        )
    return np.log(r), q


def _curves(anchor_bpp, anchor_quality, test_bpp, test_quality, method: str):
    """Both curves validated and in (log-rate, quality) form."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return (
        _curve(anchor_bpp, anchor_quality, "anchor", method),
        _curve(test_bpp, test_quality, "test", method),
    )


def _mean_over(x: np.ndarray, y: np.ndarray, low: float, high: float, method: str) -> float:
    """Mean of the interpolated y(x) over [low, high]."""
    if method == "pchip":
        integral = PchipInterpolator(x, y).integrate(low, high)
    else:
        poly = np.polyint(np.polyfit(x, y, 3))
        integral = np.polyval(poly, high) - np.polyval(poly, low)
    return float(integral) / (high - low)


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    low, high = max(a.min(), b.min()), min(a.max(), b.max())
    if high <= low:
        raise ValueError(f"the curves do not overlap in {what}")
    fraction = (high - low) / max(a.max() - a.min(), b.max() - b.min())
    if fraction < MIN_OVERLAP:
        warnings.warn(
            f"the curves overlap over only {fraction:.0%} of their {what} range; the BD figure is unreliable",
            BDWarning,
            stacklevel=3,
        )
    return low, high


def bd_rate(
    anchor_bpp: Sequence[float],
    anchor_psnr: Sequence[float],
    test_bpp: Sequence[float],
    test_psnr: Sequence[float],
    method: str = "pchip",
    quality_range: tuple[float, float] | None = None,
) -> float:
    """Bjøntegaard delta rate of ``test`` against ``anchor``, in percent.

    Works for any quality measure on the second axis (PSNR, MS-SSIM in dB...).
    ``quality_range``: average over this quality interval only (intersected with the range
    both curves cover), so that codecs whose curves end at different qualities can be set
    against one anchor over the same interval.
    """
    (log_ra, qa), (log_rt, qt) = _curves(anchor_bpp, anchor_psnr, test_bpp, test_psnr, method)
    low, high = _overlap(qa, qt, "quality")
    if quality_range is not None:
        low, high = max(low, quality_range[0]), min(high, quality_range[1])
        if high <= low:
            raise ValueError(
                f"the quality range {quality_range[0]:g}-{quality_range[1]:g} lies outside "
                "what both curves cover"
            )
    diff = _mean_over(qt, log_rt, low, high, method) - _mean_over(qa, log_ra, low, high, method)
    return (math.exp(diff) - 1) * 100


def bd_psnr(
    anchor_bpp: Sequence[float],
    anchor_psnr: Sequence[float],
    test_bpp: Sequence[float],
    test_psnr: Sequence[float],
    method: str = "pchip",
) -> float:
    """Bjøntegaard delta quality of ``test`` against ``anchor`` (dB for PSNR)."""
    (log_ra, qa), (log_rt, qt) = _curves(anchor_bpp, anchor_psnr, test_bpp, test_psnr, method)
    low, high = _overlap(log_ra, log_rt, "log-rate")
    return _mean_over(log_rt, qt, low, high, method) - _mean_over(log_ra, qa, low, high, method)
