"""BD-rate reports: a markdown and JSON table against an anchor, and rate–distortion plots."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from lic.errors import UsageError
from lic.evaluation.bd import BDWarning, bd_psnr, bd_rate
from lic.evaluation.metrics import ms_ssim_db
from lic.files import atomic_output
from lic.paths import recorded_path


def load_results(path: Path) -> dict:
    """A results JSON in CompressAI's shape (``name``, ``results.bpp``, ``results.psnr-rgb``...)."""
    try:
        data = json.loads(Path(path).read_text())
        data["results"]["bpp"], data["results"]["psnr-rgb"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a results JSON ({type(exc).__name__}: {exc})") from None
    data.setdefault("name", Path(path).stem)
    data["source"] = recorded_path(path)
    return data


def _values(curve: dict, key: str) -> list[float] | None:
    values = curve["results"].get(key)
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def _bd(
    anchor: dict, test: dict, key: str, transform=lambda v: v
) -> tuple[float | None, float | None, str | None]:
    a, t = _values(anchor, key), _values(test, key)
    if a is None or t is None:
        return None, None, f"no {key}"
    a, t = [transform(v) for v in a], [transform(v) for v in t]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BDWarning)
        try:
            rate = bd_rate(anchor["results"]["bpp"], a, test["results"]["bpp"], t)
            quality = bd_psnr(anchor["results"]["bpp"], a, test["results"]["bpp"], t)
        except ValueError as exc:
            return None, None, str(exc)
    return rate, quality, str(caught[0].message) if caught else None


def _mean(curve: dict, key: str) -> float | None:
    values = [v for v in curve["results"].get(key, []) or [] if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


#: Decimals kept in ``report.json``: far below any figure's meaning (BD-rate in %, BD-PSNR in dB,
#: times in s), and enough that a report regenerated from the same curves is the same file rather
#: than one differing in floating-point noise in the last digit.
REPORT_DECIMALS = 6


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, REPORT_DECIMALS)


def build_report(curves: list[dict], anchor: dict) -> list[dict]:
    """One row per curve: BD-rate/BD-PSNR (and BD-rate in MS-SSIM dB) against the anchor, to
    :data:`REPORT_DECIMALS` decimals."""
    rows = []
    for curve in curves:
        rate, quality, note = _bd(anchor, curve, "psnr-rgb")
        ms_rate, _, _ = _bd(anchor, curve, "ms-ssim-rgb", ms_ssim_db)
        rows.append(
            {
                "name": curve["name"],
                "points": len(curve["results"]["bpp"]),
                "bd_rate_psnr": _rounded(rate),
                "bd_psnr": _rounded(quality),
                "bd_rate_ms_ssim": _rounded(ms_rate),
                "parameters": curve.get("parameters"),
                "encoding_time": _rounded(_mean(curve, "encoding_time")),
                "decoding_time": _rounded(_mean(curve, "decoding_time")),
                "note": note,
                "source": curve.get("source"),
            }
        )
    return rows


def _fmt(value: float | None, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


def _markdown(rows: list[dict], anchor: dict) -> str:
    lines = [
        f"# Rate–distortion report against {anchor['name']}",
        "",
        "BD-rate: average bit-rate difference at equal quality (negative is better), piecewise cubic",
        "(JVET CTC) interpolation; BD-PSNR: average PSNR difference at equal rate.",
        "",
        "| codec | points | BD-rate PSNR | BD-PSNR | BD-rate MS-SSIM | parameters | encode s | decode s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['points']} | {_fmt(r['bd_rate_psnr'], '{:+.2f}%')} | {_fmt(r['bd_psnr'], '{:+.3f} dB')} "
            f"| {_fmt(r['bd_rate_ms_ssim'], '{:+.2f}%')} | {_fmt(r['parameters'], '{:,}')} "
            f"| {_fmt(r['encoding_time'], '{:.3f}')} | {_fmt(r['decoding_time'], '{:.3f}')} |"
        )
    notes = [f"- {r['name']}: {r['note']}" for r in rows if r["note"]]
    if notes:
        lines += ["", "Notes:", *notes]
    lines += ["", "![PSNR](rd-psnr.png)", "", "![MS-SSIM](rd-msssim.png)", ""]
    return "\n".join(lines)


def _plot(
    curves: list[dict], anchor: dict, key: str, ylabel: str, path: Path, transform=lambda v: v
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5), dpi=120)
    plotted = 0
    for curve in [anchor, *[c for c in curves if c is not anchor]]:
        values = _values(curve, key)
        if values is None:
            continue
        style = {"linestyle": "--", "color": "black"} if curve is anchor else {}
        axis.plot(
            curve["results"]["bpp"],
            [transform(v) for v in values],
            marker="o",
            markersize=3,
            label=curve["name"],
            **style,
        )
        plotted += 1
    axis.set_xlabel("bits per pixel")
    axis.set_ylabel(ylabel)
    axis.grid(True, alpha=0.3)
    if plotted:
        axis.legend(fontsize=8)
    else:
        axis.text(
            0.5,
            0.5,
            f"no curve has {key} values",
            ha="center",
            va="center",
            transform=axis.transAxes,
        )
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def write_report(results: list[Path], anchor: str, output: Path) -> dict:
    """Write ``report.md``, ``report.json``, ``rd-psnr.png`` and ``rd-msssim.png`` into ``output``.

    ``anchor`` is the name of one of the curves, or a results JSON file.
    """
    curves = [load_results(p) for p in results]
    if not curves:
        raise UsageError("no results files given")
    anchor_curve = next((c for c in curves if c["name"] == anchor), None)
    if anchor_curve is None:
        if not Path(anchor).is_file():
            names = ", ".join(c["name"] for c in curves)
            raise UsageError(f"anchor {anchor!r} is neither a curve ({names}) nor a results file")
        anchor_curve = load_results(Path(anchor))
        curves.append(anchor_curve)
    output.mkdir(parents=True, exist_ok=True)
    rows = build_report([c for c in curves if c is not anchor_curve], anchor_curve)
    report = {
        "anchor": anchor_curve["name"],
        "anchor_source": anchor_curve.get("source"),
        "rows": rows,
    }
    with atomic_output(output / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    with atomic_output(output / "report.md") as tmp:
        tmp.write_text(_markdown(rows, anchor_curve))
    _plot(curves, anchor_curve, "psnr-rgb", "PSNR (RGB) [dB]", output / "rd-psnr.png")
    _plot(
        curves,
        anchor_curve,
        "ms-ssim-rgb",
        "MS-SSIM (RGB) [dB]",
        output / "rd-msssim.png",
        ms_ssim_db,
    )
    return report
