"""BD-rate / BD-PSNR against published reference values from independent sources.

Sources:
1. The FAU ``bjontegaard`` package (C. Herglotz et al., FAU-LMS/bjontegaard), whose PCHIP
   implementation its authors cross-checked against the JVET common-test-conditions Excel sheet
   (JVET-T2010) to 10 decimal places; its README example data (x265 presets) is used here.
2. The TCM paper (J. Liu, H. Sun, J. Katto, "Learned Image Compression with Mixed
   Transformer-CNN Architectures", CVPR 2023), which reports -11.74% BD-rate for its large model
   against VTM on Kodak, from the RD points it published (shared/reference/tcm).
3. BD-rates of CompressAI's published Kodak curves against its VTM curve, as recorded with the
   shared reference data (shared/reference/README.md): cheng2020-anchor +3.7%, mbt2018 +11.0%,
   mbt2018-mean +21.3%, bmshj2018-hyperprior +30.5%, TCM-small -6.7%.
"""

from __future__ import annotations

import json
import warnings

import pytest

from lic.evaluation.bd import BDWarning, bd_psnr, bd_rate
from tests.conftest import shared_root

# FAU bjontegaard README example (x265, two presets); anchor first.
RATE_A = [9487.76, 4593.60, 2486.44, 1358.24]
PSNR_A = [40.037, 38.615, 36.845, 34.851]
RATE_T = [9787.80, 4469.00, 2451.52, 1356.24]
PSNR_T = [40.121, 38.651, 36.970, 34.987]


def test_pchip_matches_the_jvet_excel_reproduction() -> None:
    bjontegaard = pytest.importorskip(
        "bjontegaard", reason="the bjontegaard package is a dev dependency"
    )
    for method in ("pchip", "cubic"):
        expected_rate = bjontegaard.bd_rate(RATE_A, PSNR_A, RATE_T, PSNR_T, method=method)
        expected_psnr = bjontegaard.bd_psnr(RATE_A, PSNR_A, RATE_T, PSNR_T, method=method)
        assert bd_rate(RATE_A, PSNR_A, RATE_T, PSNR_T, method) == pytest.approx(
            expected_rate, abs=1e-8
        )
        assert bd_psnr(RATE_A, PSNR_A, RATE_T, PSNR_T, method) == pytest.approx(
            expected_psnr, abs=1e-8
        )
    # The values themselves, so the test stands without the package too.
    assert bd_rate(RATE_A, PSNR_A, RATE_T, PSNR_T) == pytest.approx(-4.4175, abs=1e-4)
    assert bd_psnr(RATE_A, PSNR_A, RATE_T, PSNR_T) == pytest.approx(0.1197, abs=1e-4)


def _curve(relative: str) -> dict:
    path = shared_root() / "reference" / relative
    if not path.is_file():
        pytest.skip(f"shared reference curves not found at {path}")
    return json.loads(path.read_text())["results"]


@pytest.mark.parametrize(
    ("relative", "expected", "tolerance"),
    [
        ("tcm/tcm-large_kodak.json", -11.74, 0.05),  # TCM paper, CVPR 2023
        ("tcm/tcm-small_kodak.json", -6.7, 0.05),
        ("compressai/kodak/compressai-cheng2020-anchor_mse_cpu.json", 3.7, 0.05),
        ("compressai/kodak/compressai-mbt2018_mse_cpu.json", 11.0, 0.05),
        ("compressai/kodak/compressai-mbt2018-mean_mse_cpu.json", 21.3, 0.05),
        ("compressai/kodak/compressai-bmshj2018-hyperprior_mse_cpu.json", 30.5, 0.05),
    ],
)
def test_published_bd_rates_against_vtm_on_kodak(
    relative: str, expected: float, tolerance: float
) -> None:
    vtm = _curve("compressai/kodak/vtm.json")
    test = _curve(relative)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BDWarning)
        value = bd_rate(vtm["bpp"], vtm["psnr-rgb"], test["bpp"], test["psnr-rgb"])
    assert value == pytest.approx(expected, abs=tolerance)


def test_identical_and_scaled_curves() -> None:
    assert bd_rate(RATE_A, PSNR_A, RATE_A, PSNR_A) == pytest.approx(0.0, abs=1e-12)
    half = [r / 2 for r in RATE_A]
    assert bd_rate(RATE_A, PSNR_A, half, PSNR_A) == pytest.approx(-50.0, abs=1e-9)
    assert bd_psnr(RATE_A, PSNR_A, RATE_A, [p + 1 for p in PSNR_A]) == pytest.approx(1.0, abs=1e-9)


def test_quality_range_restricts_the_average() -> None:
    """Over a sub-range, BD-rate averages only there: a test curve that is 10% cheaper up to
    37 dB and 30% dearer above gives exactly -10% over 34-36 dB (where the interpolants differ
    by the shift alone) and much more over the whole range."""
    psnr = [34.0, 35.0, 36.0, 37.0, 38.0, 39.0, 40.0]
    anchor = [1.0, 1.3, 1.7, 2.2, 2.9, 3.8, 5.0]
    test = [r * (0.9 if q <= 37 else 1.3) for r, q in zip(anchor, psnr, strict=True)]
    low = bd_rate(anchor, psnr, test, psnr, quality_range=(34.0, 36.0))  # slopes unchanged
    assert low == pytest.approx(-10.0, abs=1e-6)
    assert bd_rate(anchor, psnr, test, psnr) > low + 5
    wide = bd_rate(anchor, psnr, test, psnr, quality_range=(0.0, 100.0))
    assert wide == pytest.approx(bd_rate(anchor, psnr, test, psnr))
    with pytest.raises(ValueError, match="outside what both curves cover"):
        bd_rate(anchor, psnr, test, psnr, quality_range=(41.0, 45.0))


def test_points_are_sorted_before_use() -> None:
    order = [2, 0, 3, 1]
    shuffled_rate = [RATE_T[i] for i in order]
    shuffled_psnr = [PSNR_T[i] for i in order]
    assert bd_rate(RATE_A, PSNR_A, shuffled_rate, shuffled_psnr) == pytest.approx(
        bd_rate(RATE_A, PSNR_A, RATE_T, PSNR_T)
    )


def test_bad_curves_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="at least 4 points"):
        bd_rate(RATE_A[:3], PSNR_A[:3], RATE_T, PSNR_T, method="cubic")
    with pytest.raises(ValueError, match="at least 2 points"):
        bd_rate(RATE_A[:1], PSNR_A[:1], RATE_T, PSNR_T)
    with pytest.raises(ValueError, match="not strictly increasing"):
        bd_rate(RATE_A, [40.0, 38.0, 39.0, 34.0], RATE_T, PSNR_T)
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate(RATE_A, PSNR_A, RATE_T, [p + 20 for p in PSNR_T])
    with pytest.raises(ValueError, match="method"):
        bd_rate(RATE_A, PSNR_A, RATE_T, PSNR_T, method="akima")
    with pytest.raises(ValueError, match="positive"):
        bd_rate([0, 1, 2, 3], PSNR_A, RATE_T, PSNR_T)


def test_small_overlap_warns() -> None:
    with pytest.warns(BDWarning, match="overlap over only"):
        bd_rate(RATE_A, PSNR_A, RATE_T, [p + 4.8 for p in PSNR_T])
