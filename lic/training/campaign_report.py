"""The campaign's learning curves: a JSON of every measurement, a markdown table and a plot.

Everything is read from the runs' ``state.json`` (the measurements each slice recorded), so
``scripts/campaign.py report`` regenerates ``docs/campaign/`` from the tracked state alone.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

from lic.files import atomic_output
from lic.training.campaign import Plan, cpu_share, iter_records

#: The held-out/training gap is called growing when it rose over this many evaluations in a row...
GAP_WINDOW = 3
#: ...and is larger than this fraction of the training-set loss.
GAP_FRACTION = 0.03


def overfitting(evals: list[dict[str, Any]]) -> dict[str, Any]:
    """The held-out minus training-set loss over the evaluations, and whether it is growing.

    Both losses come from the same procedure (EMA weights, eval mode, fixed centre crops), one on
    photos the run never trains on and one on photos it does, so their difference is the
    generalisation gap. It is *growing* when it rose over the last ``GAP_WINDOW`` evaluations
    and exceeds ``GAP_FRACTION`` of the training-set loss.
    """
    points = [
        (e["step"], e["heldout"]["loss"] - e["train_eval"]["loss"], e["train_eval"]["loss"])
        for e in evals
        if "heldout" in e and "train_eval" in e
    ]
    if not points:
        return {"gaps": [], "growing": False}
    recent = [gap for _, gap, _ in points[-(GAP_WINDOW + 1) :]]
    rising = len(recent) == GAP_WINDOW + 1 and all(b > a for a, b in pairwise(recent))
    step, gap, train = points[-1]
    growing = bool(rising and gap > GAP_FRACTION * train)
    return {
        "gaps": [[s, g] for s, g, _ in points],
        "growing": growing,
        "last_gap": gap,
        "last_step": step,
        "last_relative_gap": gap / train if train else math.nan,
    }


def collect(plan: Plan) -> dict[str, Any]:
    runs = {}
    for spec, record in iter_records(plan):
        if record is None:
            runs[spec.name] = {
                "codec": spec.codec,
                "lmbda": spec.lmbda,
                "target": spec.steps,
                "step": 0,
                "evals": [],
            }
            continue
        runs[spec.name] = {
            "codec": record["codec"],
            "lmbda": record["lmbda"],
            "target": spec.steps,
            "step": record["step"],
            "images_seen": record["images_seen"],
            "compute": record["compute"],
            "hardware": sorted({s["name"] for s in record["slices"]}),
            "cpu_share": cpu_share(record),
            "teacher": spec.teacher,
            "init": spec.init,
            "evals": record["evals"],
            "overfitting": overfitting(record["evals"]),
        }
    return {"plan": plan.name, "runs": runs}


#: Stretches of compute shorter than this are merged into the next one in the gain table.
MIN_STRETCH_HOURS = 0.02


def _hours(measurement: dict[str, Any]) -> float:
    return measurement["cpu_core_hours"] + measurement["gpu_hours"]


def _markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# Training campaign `{data['plan']}`: learning curves",
        "",
        "Regenerate with `python scripts/campaign.py report` (reads `campaign/<plan>/*/state.json`);",
        "continue the campaign with `python scripts/campaign.py run --hours H [--device cuda]`.",
        "Kodak: all 24 images through real bitstreams (bpp from the bytes, PSNR of the 8-bit decode),",
        "EMA weights; measured for these curves only, never used to select anything.",
        "Held-out: centre crops of photos held out of the training folder; train: the same on training photos.",
        "",
        "Held-out z bpp: the hyper-latent's bits per pixel (≈ 0: the hyperprior has collapsed and",
        "the first latent slice is coded without side information; – : not measured then).",
        "Held-out ceiling: the PSNR of the transforms alone, nothing rounded (`g_s(g_a(x))`), what ever",
        "finer quantisation tends to: a variable-rate run whose top qualities near it is limited by its",
        "network, not its bits (a fixed-rate synthesis, trained on rounded latents, can code past it).",
        "",
        "| run | codec | λ | steps / target | images seen | CPU core-h | GPU-h | Kodak bpp | Kodak PSNR | held-out loss | train loss | gap | held-out z bpp | held-out PSNR | held-out ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in data["runs"].items():
        if not run["evals"]:
            lines.append(
                f"| {name} | {run['codec']} | {run['lmbda']} | {run['step']} / {run['target']} | – | – | – | – | – | – | – | not started | – | – | – |"
            )
            continue
        kodak = next((e["kodak"] for e in reversed(run["evals"]) if "kodak" in e), {})
        last = next((e for e in reversed(run["evals"]) if "heldout" in e), {})
        fit = run["overfitting"]
        gap = (
            f"{fit['last_relative_gap']:+.1%}{' growing' if fit['growing'] else ''}"
            if fit["gaps"]
            else "–"
        )
        bpp_z = last.get("heldout", {}).get("bpp_z")
        ceiling = last.get("heldout", {}).get("ceiling_psnr")
        lines.append(
            f"| {name} | {run['codec']} | {run['lmbda']} | {run['step']} / {run['target']} | {run['images_seen']:,} "
            f"| {run['compute']['cpu_core_hours']:.2f} | {run['compute']['gpu_hours']:.2f} "
            f"| {kodak.get('bpp', math.nan):.3f} | {kodak.get('psnr', math.nan):.2f} "
            f"| {last.get('heldout', {}).get('loss', math.nan):.3f} | {last.get('train_eval', {}).get('loss', math.nan):.3f} | {gap} "
            f"| {'–' if bpp_z is None else f'{bpp_z:.4f}'} "
            f"| {last.get('heldout', {}).get('psnr', math.nan):.2f} "
            f"| {'–' if ceiling is None else f'{ceiling:.2f}'} |"
        )
    lines += [
        "",
        "What each stretch of compute bought (consecutive Kodak measurements; compute is CPU core-hours",
        "plus GPU-hours, so compare rows of the same hardware):",
        "",
        "| run | steps | compute (h) | Kodak PSNR | Kodak bpp | held-out loss | dB per compute-hour |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in data["runs"].items():
        measured: list[dict[str, Any]] = []
        for point in (e for e in run["evals"] if "kodak" in e):
            if measured and _hours(point) - _hours(measured[-1]) < MIN_STRETCH_HOURS:
                measured[-1] = point  # a slice cut short: merged with the stretch before
            else:
                measured.append(point)
        for before, after in pairwise(measured):
            hours = _hours(after) - _hours(before)
            gain = after["kodak"]["psnr"] - before["kodak"]["psnr"]
            held = (
                f"{before['heldout']['loss']:.3f} → {after['heldout']['loss']:.3f}"
                if "heldout" in before and "heldout" in after
                else "–"
            )
            lines.append(
                f"| {name} | {before['step']} → {after['step']} | {hours:.2f} "
                f"| {before['kodak']['psnr']:.2f} → {after['kodak']['psnr']:.2f} "
                f"| {before['kodak']['bpp']:.3f} → {after['kodak']['bpp']:.3f} | {held} | {gain / hours:+.2f} |"
            )
    lines += [
        "",
        "Hardware: "
        + "; ".join(
            f"{n}: {', '.join(r.get('hardware', [])) or '–'}"
            + (f" (CPU share {r['cpu_share']:.0%})" if r.get("cpu_share") is not None else "")
            for n, r in data["runs"].items()
        ),
        "",
        "CPU share: the CPU time a run's training processes had over the core time they held",
        "(wall time × threads, which CPU core-h counts), over the slices that record it; below",
        "100% other work shared the cores, and the core-hours overstate what the run used.",
        "",
    ]
    lines += ["![learning curves](curves.png)", ""]
    return "\n".join(lines)


#: A run is drawn as a learning curve from this many Kodak measurements on; shorter runs (the
#: 2,500-step fine-tunes) are drawn as the final points of their family (below).
CURVE_MEASUREMENTS = 3


def families(data: dict[str, Any]) -> dict[str, list[str]]:
    """Runs named ``<prefix>-<number>`` at two or more λ, by ``<prefix>-*``: the rate points
    of one recipe (``student-fixed-1`` … ``-8``), in the order of their λ."""
    groups: dict[str, list[str]] = {}
    for name in data["runs"]:
        prefix, _, number = name.rpartition("-")
        if prefix and number.isdigit():
            groups.setdefault(f"{prefix}-*", []).append(name)
    return {
        prefix: sorted(names, key=lambda n: data["runs"][n]["lmbda"])
        for prefix, names in groups.items()
        if len({data["runs"][n]["lmbda"] for n in names}) > 1
    }


def start_offset(data: dict[str, Any], name: str) -> tuple[float, int]:
    """Compute (CPU core-hours + GPU-hours) and images a run's weights had already had when it
    started: those of the run it starts from (``init``), and of that run's start, so that a run
    that continues another is drawn where that one stopped."""
    init = data["runs"][name].get("init")
    if init is None or init not in data["runs"] or not data["runs"][init].get("evals"):
        return 0.0, 0
    before = data["runs"][init]
    hours, images = start_offset(data, init)
    compute = before["compute"]
    return (
        hours + compute["cpu_core_hours"] + compute["gpu_hours"],
        images + before["images_seen"],
    )


def _plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    for name, run in data["runs"].items():
        kodak = [e for e in run["evals"] if "kodak" in e]
        if len(kodak) < CURVE_MEASUREMENTS:
            continue
        colour = next(colours)
        hours0, images0 = start_offset(data, name)  # a continued run starts where its init ended
        label = f"{name} (from {run['init']})" if hours0 else name
        hours = [hours0 + _hours(e) for e in kodak]
        psnr, bpp = [e["kodak"]["psnr"] for e in kodak], [e["kodak"]["bpp"] for e in kodak]
        axes[0, 0].plot(hours, psnr, marker=".", color=colour, label=label)
        axes[0, 1].plot(hours, bpp, marker=".", color=colour, label=label)
        axes[1, 1].plot(bpp, psnr, marker=".", color=colour, alpha=0.5, label=f"{name} (path)")
        held = [e for e in run["evals"] if "heldout" in e]
        seen = [(images0 + e["images_seen"]) / 1e3 for e in held]
        axes[1, 0].plot(
            seen, [e["heldout"]["loss"] for e in held], color=colour, label=f"{label} held-out"
        )
        axes[1, 0].plot(seen, [e["train_eval"]["loss"] for e in held], ls="--", color=colour)
    for prefix, names in families(data).items():
        final = [data["runs"][n]["evals"] for n in names if data["runs"][n]["step"] > 0]
        points = sorted(
            (e[-1]["kodak"]["bpp"], e[-1]["kodak"]["psnr"]) for e in final if "kodak" in e[-1]
        )
        if points:
            axes[1, 1].plot(
                *zip(*points, strict=True),
                marker="s",
                color=next(colours),
                label=f"{prefix} ({len(points)} λ, latest)",
            )
    axes[0, 0].set(
        xlabel="compute (CPU core-hours + GPU-hours; a continued run from its start's)",
        ylabel="Kodak PSNR (dB)",
        title="quality",
    )
    axes[0, 1].set(
        xlabel="compute (CPU core-hours + GPU-hours; a continued run from its start's)",
        ylabel="Kodak bpp",
        title="rate",
    )
    axes[1, 0].set(
        xlabel="training images seen (thousands)",
        ylabel="RD loss (λ·255²·MSE + bpp)",
        title="held-out (solid) vs training photos (dashed)",
    )
    axes[1, 0].set_yscale("log")
    axes[1, 1].set(
        xlabel="Kodak bpp",
        ylabel="Kodak PSNR (dB)",
        title="rate–distortion: paths in training, families over λ",
    )
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)
    fig.suptitle(f"campaign {data['plan']}: learning curves (real bitstreams on Kodak)")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(plan: Plan, out: Path) -> list[Path]:
    """Write ``curves.json``, ``README.md`` and ``curves.png`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    data = collect(plan)
    paths = [out / "curves.json", out / "README.md", out / "curves.png"]
    with atomic_output(paths[0]) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
    with atomic_output(paths[1]) as tmp:
        tmp.write_text(_markdown(data))
    _plot(data, paths[2])
    return paths
