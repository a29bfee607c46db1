"""Rendering of analyses: text, markdown and NaN-free JSON.

Renderers only format; every number comes unrounded from :mod:`budgie.bench.analyze`. Rounding
is half-up on the shortest decimal form of a float (2.325 -> 2.33, 28.625 -> 28.63), which is
how the seed report rounded, so its numbers reproduce exactly. Text and markdown are built from
one list of blocks so both always show the same content.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

LABELS = {
    "preprocess": "Preprocess",
    "encode": "Encode",
    "decode": "Decode",
    "tokenize": "Tokenize",
    "total": "Total",
    "load_audio": "Load audio",
}


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]
    numbered: bool = False


Block = str | Table | Heading | Bullets


def num(value: float | None, digits: int) -> str:
    """Half-up rounding of the shortest decimal form; "n/a" for None or non-finite."""
    if value is None or not math.isfinite(value):
        return "n/a"
    quantum = Decimal(1).scaleb(-digits)
    text = str(Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP))
    return "0" + text[2:] if text.startswith("-0") and set(text[2:]) <= {".", "0"} else text


def ms(value: float | None) -> str:
    """Milliseconds at 0.1: exact zero is "0", a non-zero value that rounds to zero is "~0"."""
    if value == 0:
        return "0"
    text = num(value, 1)
    return "~0" if text in ("0.0", "-0.0") else text


def pct(fraction: float | None) -> str:
    """A share as percent at 0.1, with "< 0.1 %" for tiny non-zero shares."""
    if fraction is None or not math.isfinite(fraction):
        return "n/a"
    if 0 < fraction < 0.0005:
        return "< 0.1 %"
    return f"{num(100.0 * fraction, 1)} %"


def signed(value: float, digits: int) -> str:
    """Number with an explicit sign: "+1.60", "-0.2"."""
    text = num(value, digits)
    return text if text.startswith("-") else "+" + text


def _term(value: float, digits: int) -> str:
    """A following term of a sum: "+ 1.12" or "- 0.2"."""
    text = signed(value, digits)
    return f"{text[0]} {text[1:]}"


def line_fit(fit: dict[str, float], var: str = "d") -> str:
    """``a·d + b (R²)`` as in the seed report: slope 2 decimals, intercept 1, R² 3."""
    return f"{num(fit['slope'], 2)}·{var} {_term(fit['intercept'], 1)} ({num(fit['r2'], 3)})"


# --- rendering of blocks -------------------------------------------------------------------


def _text_table(table: Table) -> list[str]:
    grid = [table.header, *table.rows]
    widths = [max(len(row[i]) for row in grid) for i in range(len(table.header))]
    lines = []
    for k, row in enumerate(grid):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _md_table(table: Table) -> list[str]:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---"] + ["---:"] * (len(table.header) - 1)
    return [row(table.header), "| " + " | ".join(align) + " |", *(row(r) for r in table.rows)]


def render_blocks(blocks: list[Block], fmt: str) -> str:
    """Join blocks as plain text (aligned columns) or GitHub markdown."""
    md = fmt == "markdown"
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["", f"## {block.text}" if md else block.text]
            if not md:
                out.append("=" * len(block.text))
        elif isinstance(block, Table):
            out += ["", *(_md_table(block) if md else _text_table(block))]
        elif isinstance(block, Bullets):
            out.append("")
            for i, item in enumerate(block.items, 1):
                out.append(f"{i}. {item}" if block.numbered else f"- {item}")
        else:
            out += ["", block]
    return "\n".join(out).strip("\n") + "\n"


# --- the analysis --------------------------------------------------------------------------


def _phase_table(a: dict[str, Any]) -> Table:
    keys = ("mean", "min", "max", "p50", "p95", "std")
    rows = [[LABELS[name], *(ms(a["phases"][name][k]) for k in keys)] for name in a["phases"]]
    return Table(["Phase (ms)", "Mean", "Min", "Max", "p50", "p95", "Std"], rows)


def _rtfx(value: float | None) -> str:
    if value is None:
        return "n/a (0 ms)"
    return f"{num(value, 0 if value >= 1000 else 1)}x"


def _fit_table(a: dict[str, Any]) -> Table:
    rows = []
    for name, fit in a["fits"].items():
        rtfx = a["rtfx"].get(name)
        rows.append([LABELS[name], line_fit(fit), _rtfx(rtfx)])
    return Table(["Phase", "ms = a·d + b (R²)", "RTFx"], rows)


def _rtf_line(a: dict[str, Any]) -> str:
    r = a["rtf"]
    if r["mean"] is None:
        return "RTF: n/a"
    return (
        f"RTF (audio s / processing s, higher is faster; {r['source']}): mean {num(r['mean'], 2)}, "
        f"min {num(r['min'], 2)}, max {num(r['max'], 2)}, p50 {num(r['p50'], 1)}, "
        f"p95 {num(r['p95'], 1)}, std {num(r['std'], 2)}; slope vs duration "
        f"{signed(r['slope'], 2)} (R² {num(r['r2'], 2)})"
    )


def _bucket_table(a: dict[str, Any]) -> Table:
    rows = [
        [
            f"{num(b['lo'], 0)}–{num(b['hi'], 0)} s",
            str(b["count"]),
            f"{ms(b['decode_min'])}–{ms(b['decode_max'])}",
            f"{ms(b['encode_min'])}–{ms(b['encode_max'])}",
        ]
        for b in a["buckets"]
    ]
    return Table(["Duration", "Runs", "Decode ms", "Encode ms"], rows)


def _counts_lines(a: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    tokens = a.get("tokens")
    if tokens:
        how = {
            "recorded": "recorded by the runner",
            "tokenizer": f"ESTIMATED with the tokenizer {tokens.get('tokenizer')}",
            "characters": f"ESTIMATED at {tokens.get('chars_per_token')} characters per token",
        }[tokens["source"]]
        tag = " (estimated)" if tokens["estimated"] else ""
        blocks += [
            Heading(f"Decode cost per token ({how})"),
            f"Tokens{tag}: mean {num(tokens['mean'], 1)} per run, "
            f"{num(tokens['per_audio_s'], 2)} per audio second; decode "
            f"{num(tokens['decode_ms_per_count'], 3)} ms per token overall; "
            f"fit decode_ms = {line_fit(tokens['decode_fit'], 'tokens')}",
        ]
        fit2 = a.get("decode_fit2")
        if fit2:
            blocks.append(
                f"Two-variable fit{tag}: decode_ms = {num(fit2['per_audio_s'], 2)}·d "
                f"{_term(fit2['per_token'], 2)}·tokens {_term(fit2['intercept'], 1)} "
                f"(R² {num(fit2['r2'], 3)})"
            )
    steps = a.get("decoder_steps")
    if steps:
        blocks.append(
            f"Decoder steps: mean {num(steps['mean'], 1)} per run; decode "
            f"{num(steps['decode_ms_per_count'], 3)} ms per step overall; fit decode_ms = "
            f"{line_fit(steps['decode_fit'], 'steps')}"
        )
    return blocks


def _wer_line(a: dict[str, Any]) -> str:
    w = a["wer"]
    if w is None:
        return "WER: n/a (no reference texts)"
    if "words" in w:
        return (
            f"WER: {pct(w['wer'])} ({w['errors']} word errors / {w['words']} reference words "
            f"over {w['n']} runs; lowercase, punctuation stripped)"
        )
    return f"WER: {pct(w['wer'])} (mean of {w['n']} recorded per-run WERs)"


def analysis_blocks(a: dict[str, Any]) -> list[Block]:
    """The sections of the seed analysis, then Budgie's additions."""
    d = a["duration_s"]
    share = ", ".join(f"{p} {pct(a['share'][p])}" for p in a["bottleneck"])
    blocks: list[Block] = [
        Heading(f"Benchmark analysis: {a['file']} ({a['source']} format)"),
        f"n = {a['n']} valid runs, {a['errors']} error rows; audio "
        f"{num(d['min'], 2)}–{num(d['max'], 2)} s, mean {num(d['mean'], 2)} s",
        Heading("Phase times"),
        _phase_table(a),
        f"Share of total (mean phase / mean total): {share}",
        "Bottleneck ranking: " + " > ".join(a["bottleneck"]),
        Heading("Linear fits against audio duration d (s), and RTFx (audio s / phase s)"),
        _fit_table(a),
        _rtf_line(a),
        Heading("2-second duration buckets"),
        _bucket_table(a),
        *_counts_lines(a),
        Heading("Accuracy"),
        _wer_line(a),
    ]
    if a["recommendations"]:
        blocks += [Heading("Recommendations"), Bullets(a["recommendations"], numbered=True)]
    if a["notes"]:
        blocks += [Heading("Notes"), Bullets(a["notes"])]
    return blocks


def render_analysis(a: dict[str, Any], fmt: str) -> str:
    """``fmt``: "text", "markdown" or "json"."""
    if fmt == "json":
        return to_json(a)
    return render_blocks(analysis_blocks(a), fmt)


# --- JSON ----------------------------------------------------------------------------------


def json_safe(obj: Any, path: str = "$", replaced: list[str] | None = None) -> Any:
    """A copy with NaN/inf replaced by None (their paths appended to ``replaced``)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v, f"{path}.{k}", replaced) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, f"{path}[{i}]", replaced) for i, v in enumerate(obj)]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if hasattr(obj, "item"):  # numpy scalar
        return json_safe(obj.item(), path, replaced)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if replaced is not None:
            replaced.append(path)
        return None
    return str(obj)


def to_json(obj: dict[str, Any]) -> str:
    """One JSON object, never NaN: non-finite numbers become null and are listed in notes."""
    replaced: list[str] = []
    safe = json_safe(obj, replaced=replaced)
    if replaced:
        safe.setdefault("notes", []).append(
            "Not-a-number results replaced by null: " + ", ".join(replaced[:10])
        )
    return json.dumps(safe, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
