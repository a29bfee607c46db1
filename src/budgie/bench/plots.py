"""PNG plots of one analysis (matplotlib, imported lazily with the Agg backend).

Four figures: phase time vs duration with the fitted lines, decode time vs tokens, stacked
phase shares per 2-second duration bucket, and RTF vs duration. Scatter plots of very large
files show every k-th run (stated in the title) so plotting stays fast; the fits drawn are
those of the analysis, computed on all runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from budgie.bench.analyze import Dataset
from budgie.bench.records import PHASES
from budgie.bench.report import line_fit
from budgie.errors import BudgieError

MAX_POINTS = 20_000
COLORS = {
    "load_audio": "tab:orange",
    "preprocess": "tab:green",
    "encode": "tab:blue",
    "decode": "tab:red",
    "tokenize": "tab:gray",
    "total": "black",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _stride(n: int) -> int:
    return max(1, -(-n // MAX_POINTS))


def _suffix(step: int) -> str:
    return f" (every {step}th run shown)" if step > 1 else ""


def _line(ax: Any, x: np.ndarray, fit: dict[str, float], color: str, label: str) -> None:
    xs = np.array([float(np.min(x)), float(np.max(x))])
    ax.plot(xs, fit["slope"] * xs + fit["intercept"], color=color, linewidth=1.5, label=label)


def _phases_vs_duration(plt: Any, data: Dataset, a: dict[str, Any], path: Path) -> None:
    step = _stride(data.duration.size)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in (*PHASES, "total"):
        ax.scatter(data.duration[::step], data.ms[name][::step], s=8, alpha=0.5, color=COLORS[name])
        fit = a["fits"][name]
        _line(ax, data.duration, fit, COLORS[name], f"{name}: {line_fit(fit)}")
    ax.set(
        xlabel="audio duration (s)",
        ylabel="time (ms)",
        title="Phase time vs audio duration" + _suffix(step),
    )
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _decode_vs_tokens(plt: Any, data: Dataset, a: dict[str, Any], path: Path) -> None:
    assert data.tokens is not None
    step = _stride(data.duration.size)
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter(
        data.tokens[::step], data.ms["decode"][::step], s=8, alpha=0.5, color=COLORS["decode"]
    )
    fit = a["tokens"]["decode_fit"]
    _line(ax, data.tokens, fit, "black", f"decode_ms = {line_fit(fit, 'tokens')}")
    label = "tokens" + (" (ESTIMATED)" if a["tokens"]["estimated"] else "")
    ax.set(xlabel=label, ylabel="decode (ms)", title="Decode time vs tokens" + _suffix(step))
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _share_per_bucket(plt: Any, data: Dataset, path: Path) -> None:
    lo = np.floor(data.duration / 2.0) * 2.0
    keys, inverse = np.unique(lo, return_inverse=True)
    count = np.bincount(inverse).astype(np.float64)
    total = np.bincount(inverse, weights=data.ms["total"]) / count
    fig, ax = plt.subplots(figsize=(8, 5))
    bottom = np.zeros(keys.size)
    labels = [f"{k:g}–{k + 2:g}" for k in keys]
    for name in data.phases:
        mean = np.bincount(inverse, weights=data.ms[name]) / count
        share = np.divide(mean, total, out=np.zeros_like(mean), where=total > 0)
        ax.bar(labels, share, bottom=bottom, color=COLORS[name], label=name)
        bottom += share
    ax.set(
        xlabel="audio duration bucket (s)",
        ylabel="share of mean total",
        title="Phase share per 2-second duration bucket",
    )
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=8, ncol=len(data.phases), loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _rtf_vs_duration(plt: Any, data: Dataset, a: dict[str, Any], path: Path) -> None:
    keep = ~np.isnan(data.rtf)
    step = _stride(int(keep.sum()))
    fig, ax = plt.subplots(figsize=(8, 5))
    x, y = data.duration[keep], data.rtf[keep]
    ax.scatter(x[::step], y[::step], s=8, alpha=0.6, color="tab:purple")
    r = a["rtf"]
    if r["slope"] is not None and x.size:
        _line(ax, x, r, "black", f"RTF = {line_fit(r)}")
        ax.legend(fontsize=8)
    ax.set(
        xlabel="audio duration (s)",
        ylabel="RTF (audio s / processing s)",
        title="RTF vs audio duration" + _suffix(step),
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(data: Dataset, analysis: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the PNGs into ``out_dir`` (created if needed); returns the written paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BudgieError(f"{out}: cannot create plot directory ({exc.strerror})") from None
    plt = _pyplot()
    written = []
    jobs: list[tuple[str, Any]] = [
        ("phase_vs_duration.png", lambda p: _phases_vs_duration(plt, data, analysis, p)),
        ("share_per_bucket.png", lambda p: _share_per_bucket(plt, data, p)),
        ("rtf_vs_duration.png", lambda p: _rtf_vs_duration(plt, data, analysis, p)),
    ]
    if data.tokens is not None:
        jobs.insert(
            1, ("decode_vs_tokens.png", lambda p: _decode_vs_tokens(plt, data, analysis, p))
        )
    for name, job in jobs:
        path = out / name
        try:
            job(path)
        except OSError as exc:
            raise BudgieError(f"{path}: cannot write plot ({exc.strerror})") from None
        written.append(path)
    return written
