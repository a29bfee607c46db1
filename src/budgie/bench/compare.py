"""Compare two benchmark files: phase means and p50s side by side, B/A ratios, shares, RTF.

Two views: *shared* uses only the samples present in both files (each sample's repeats are
averaged first, so every sample counts once on both sides: a like-for-like speed comparison);
*overall* uses every valid run of each file as it is. Samples are matched by an explicit key
(Budgie ``sample``, parakeet.js ``sampleKey``, or a file-name field) when both files have one
for every run and the keys overlap; otherwise by (normalised reference text, duration to 10 ms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from budgie.bench import stats
from budgie.bench.records import PHASES, FloatArray, RunFile
from budgie.bench.report import (
    LABELS,
    Block,
    Bullets,
    Heading,
    Table,
    ms,
    num,
    pct,
    render_blocks,
    to_json,
)

KEY_NAMES = {"sample": "sample key", "content": "reference text and duration"}
HEADER = ["Phase (ms)", "A mean", "B mean", "B/A", "A p50", "B p50", "B/A", "A share", "B share"]


Columns = dict[str, FloatArray]


def _keys(run: RunFile, how: str) -> list[str | None]:
    if how == "sample":
        return run.sample
    return [
        None if ref is None else " ".join(ref.lower().split()) + f"|{d:.2f}"
        for ref, d in zip(run.reference, run.duration.tolist(), strict=True)
    ]


def choose_key(a: RunFile, b: RunFile) -> str | None:
    """ "sample", "content" or None: the first key kind complete in both files that overlaps."""
    for how in ("sample", "content"):
        ka, kb = _keys(a, how), _keys(b, how)
        if None not in ka and None not in kb and set(ka) & set(kb):
            return how
    return None


def _columns(run: RunFile) -> Columns:
    load = run.optional["load_audio"]
    extra = {} if np.isnan(load).any() else {"load_audio": load}
    return {**extra, **run.ms, "rtf": run.rtf, "duration": run.duration}


def _phases(ca: Columns, cb: Columns) -> tuple[str, ...]:
    """The phases both sides have: load_audio only when both recorded it."""
    return tuple(p for p in ("load_audio", *PHASES) if p in ca and p in cb)


def _per_sample(run: RunFile, how: str) -> tuple[dict[str, int], Columns]:
    """Sample key -> row, and per-sample means of every column over that sample's repeats."""
    index: dict[str, int] = {}
    group = np.array([index.setdefault(str(k), len(index)) for k in _keys(run, how)])
    count = np.bincount(group, minlength=len(index)).astype(np.float64)
    means = {}
    for name, values in _columns(run).items():
        ok = ~np.isnan(values)
        sums = np.bincount(group[ok], weights=values[ok], minlength=len(index))
        counts = np.bincount(group[ok], minlength=len(index)) if not ok.all() else count
        with np.errstate(invalid="ignore", divide="ignore"):
            means[name] = sums / counts
    return index, means


def _ratio(b: float | None, a: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return b / a


def _side(columns: Columns, phases: tuple[str, ...]) -> dict[str, Any]:
    """Mean and p50 of each series, shares, RTF and mean duration of one side."""
    out: dict[str, Any] = {}
    for name in (*phases, "total", "rtf"):
        values = columns[name][~np.isnan(columns[name])]
        s = stats.summarize(values) if values.size else None
        out[name] = {"mean": s.mean if s else None, "p50": s.p50 if s else None}
    total = out["total"]["mean"]
    out["share"] = {p: (out[p]["mean"] / total if total else None) for p in phases}
    out["duration_mean"] = float(np.mean(columns["duration"]))
    out["n"] = int(columns["duration"].size)
    return out


def _section(ca: Columns, cb: Columns) -> dict[str, Any]:
    phases = _phases(ca, cb)
    sa, sb = _side(ca, phases), _side(cb, phases)
    rows = {}
    for name in (*phases, "total", "rtf"):
        rows[name] = {
            "a_mean": sa[name]["mean"],
            "b_mean": sb[name]["mean"],
            "mean_ratio": _ratio(sb[name]["mean"], sa[name]["mean"]),
            "a_p50": sa[name]["p50"],
            "b_p50": sb[name]["p50"],
            "p50_ratio": _ratio(sb[name]["p50"], sa[name]["p50"]),
        }
    return {
        "n_a": sa["n"],
        "n_b": sb["n"],
        "duration_mean": {"a": sa["duration_mean"], "b": sb["duration_mean"]},
        "series": rows,
        "share": {p: {"a": sa["share"][p], "b": sb["share"][p]} for p in phases},
    }


def _file_info(run: RunFile) -> dict[str, Any]:
    return {"file": run.name, "source": run.source, "n": run.n, "errors": len(run.errors)}


def compare(a: RunFile, b: RunFile) -> dict[str, Any]:
    """Comparison dict of baseline ``a`` and candidate ``b`` (ratios are B/A)."""
    a.require_valid()
    b.require_valid()
    notes: list[str] = []
    how = choose_key(a, b)
    result: dict[str, Any] = {"a": _file_info(a), "b": _file_info(b), "shared": None}
    match: dict[str, Any] = {"key": how, "shared": 0, "only_a": 0, "only_b": 0}
    if how is None:
        notes.append("No shared samples (no common sample keys or reference texts): overall only.")
    else:
        (ia, ma), (ib, mb) = _per_sample(a, how), _per_sample(b, how)
        shared = sorted(set(ia) & set(ib))
        match.update(shared=len(shared), only_a=len(set(ia) - set(ib)))
        match["only_b"] = len(set(ib) - set(ia))
        ra, rb = [ia[k] for k in shared], [ib[k] for k in shared]
        ca = {name: values[ra] for name, values in ma.items()}
        cb = {name: values[rb] for name, values in mb.items()}
        section = _section(ca, cb)
        per_sample = cb["total"] / np.where(ca["total"] > 0, ca["total"], np.nan)
        per_sample = per_sample[~np.isnan(per_sample)]
        section["total_ratio_per_sample"] = asdict_summary(per_sample) if per_sample.size else None
        result["shared"] = section
        if how == "content":
            notes.append("Samples matched by reference text and duration (no common sample keys).")
    result["match"] = match
    result["overall"] = _section(_columns(a), _columns(b))
    has_load = ["load_audio" in _columns(run) for run in (a, b)]
    if has_load[0] != has_load[1]:
        side = "A" if has_load[0] else "B"
        notes.append(
            f"Only {side}'s total_ms includes audio loading (load_audio_ms): compare the "
            "compute phases rather than the totals."
        )
    for side, run in (("A", a), ("B", b)):
        if run.errors:
            notes.append(f"{side}: {len(run.errors)} error row(s) excluded.")
    result["notes"] = notes
    return result


def asdict_summary(values: FloatArray) -> dict[str, float]:
    s = stats.summarize(values)
    return {"mean": s.mean, "min": s.min, "max": s.max, "p50": s.p50, "p95": s.p95}


# --- rendering -----------------------------------------------------------------------------


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{num(value, 2)}x"


def _table(section: dict[str, Any]) -> Table:
    rows = []
    for name, r in section["series"].items():
        fmt = ms if name != "rtf" else (lambda v: num(v, 2))
        share = section["share"].get(name)
        rows.append(
            [
                "RTF (x)" if name == "rtf" else LABELS[name],
                fmt(r["a_mean"]),
                fmt(r["b_mean"]),
                _x(r["mean_ratio"]),
                fmt(r["a_p50"]),
                fmt(r["b_p50"]),
                _x(r["p50_ratio"]),
                pct(share["a"]) if share else "",
                pct(share["b"]) if share else "",
            ]
        )
    return Table(HEADER, rows)


def compare_blocks(c: dict[str, Any]) -> list[Block]:
    m = c["match"]
    blocks: list[Block] = [
        Heading("Benchmark comparison (ratios are B/A; below 1 is faster for times, RTF above 1)"),
        f"A: {c['a']['file']} ({c['a']['source']}, {c['a']['n']} valid runs, "
        f"{c['a']['errors']} errors)",
        f"B: {c['b']['file']} ({c['b']['source']}, {c['b']['n']} valid runs, "
        f"{c['b']['errors']} errors)",
        (
            f"Matched by {KEY_NAMES[m['key']]}: {m['shared']} shared samples, "
            f"{m['only_a']} only in A, {m['only_b']} only in B"
            if m["key"]
            else "Samples: none shared (no common sample keys or reference texts)"
        ),
    ]
    if c["shared"]:
        s = c["shared"]
        blocks += [Heading(f"Shared samples (n = {s['n_a']}, repeats averaged)"), _table(s)]
        per = s.get("total_ratio_per_sample")
        if per:
            blocks.append(
                f"Per-sample total B/A: p50 {_x(per['p50'])}, min {_x(per['min'])}, "
                f"max {_x(per['max'])}"
            )
    o = c["overall"]
    blocks += [Heading(f"Overall (all valid runs: A n = {o['n_a']}, B n = {o['n_b']})"), _table(o)]
    d = o["duration_mean"]
    blocks.append(f"Mean audio duration: A {num(d['a'], 2)} s, B {num(d['b'], 2)} s")
    if c["notes"]:
        blocks += [Heading("Notes"), Bullets(c["notes"])]
    return blocks


def render_compare(c: dict[str, Any], fmt: str) -> str:
    """``fmt``: "text", "markdown" or "json"."""
    if fmt == "json":
        return to_json(c)
    return render_blocks(compare_blocks(c), fmt)
