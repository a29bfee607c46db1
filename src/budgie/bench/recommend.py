"""Recommendations derived from the numbers of an analysis, never from assumptions about backends.

Each rule reads the analysis dict and states a number: where the time goes (Amdahl: a phase
with share s made k times faster leaves ``1 - s*(1 - 1/k)`` of the total), what part of the
time does not scale with audio length, which maxima are outliers, and whether decode time
follows the token count or the audio length.
"""

from __future__ import annotations

from typing import Any

R2_MARGIN = 0.02
"""One fit 'explains more' than another only when its R² is larger by this much."""

OUTLIER_FACTOR = 2.0
"""A maximum above this multiple of the p95 is called an outlier."""


def _pct(fraction: float) -> str:
    return f"{100.0 * fraction:.1f} %"


def _attack(analysis: dict[str, Any]) -> list[str]:
    total = analysis["phases"]["total"]["mean"]
    ranking = [p for p in analysis["bottleneck"] if analysis["share"][p]]
    if not total or not ranking:
        return []
    first = ranking[0]
    share = analysis["share"][first]
    amdahl = analysis["amdahl"][first]
    label = first.replace("_", " ").capitalize()
    lines = [
        f"Attack {first} first: it is {_pct(share)} of the mean total ({total:.1f} ms). "
        f"{label} 10x faster -> total {amdahl['total_ms_if_10x']:.1f} ms "
        f"(-{_pct(share * 0.9)}); 2x faster -> {amdahl['total_ms_if_2x']:.1f} ms "
        f"(-{_pct(share * 0.5)}); even removing it saves at most {_pct(share)}."
    ]
    if len(ranking) > 1:
        second = ranking[1]
        both = analysis["share"][first] + analysis["share"][second]
        after = total * (1.0 - both * 0.9)
        lines.append(
            f"Then {second} ({_pct(analysis['share'][second])}): {first} and {second} both 10x "
            f"faster -> total {after:.1f} ms (-{_pct(both * 0.9)})."
        )
    return lines


def _overhead(analysis: dict[str, Any]) -> list[str]:
    fit = analysis["fits"]["total"]
    if fit["r2"] < 0.3 or fit["intercept"] <= 0 or fit["slope"] <= 0:
        return []
    short = analysis["duration_s"]["min"]
    at_short = fit["slope"] * short + fit["intercept"]
    line = (
        f"About {fit['intercept']:.1f} ms per run does not scale with audio length (total-fit "
        f"intercept, R² {fit['r2']:.3f}): {_pct(fit['intercept'] / at_short)} of the predicted "
        f"time of the shortest clip ({short:.2f} s)."
    )
    rtf = analysis["rtf"]
    if rtf.get("slope") is not None and rtf["slope"] > 0 and rtf["r2"] >= 0.3:
        line += (
            f" RTF rises by {rtf['slope']:.2f} per audio second: short clips are "
            "overhead-bound, so batching them or cutting per-call setup helps most there."
        )
    return [line]


def _outliers(analysis: dict[str, Any]) -> list[str]:
    lines = []
    for phase in ("preprocess", "encode", "decode", "total"):
        s = analysis["phases"][phase]
        if s["p95"] > 0 and s["max"] > OUTLIER_FACTOR * s["p95"] and s["max"] - s["p95"] >= 1:
            lines.append(
                f"{phase.capitalize()} max {s['max']:.1f} ms is {s['max'] / s['p95']:.1f}x its "
                f"p95 ({s['p95']:.1f} ms): an outlier (cold start, compilation or contention); "
                "use warm-up runs and quote p50/p95 rather than the mean."
            )
    return lines


def _decode_driver(analysis: dict[str, Any]) -> list[str]:
    tokens = analysis.get("tokens")
    if not tokens or analysis["n"] < 3 or analysis["phases"]["decode"]["mean"] == 0:
        return []
    by_tokens = tokens["decode_fit"]
    by_duration = analysis["fits"]["decode"]
    estimated = " (estimated tokens)" if tokens["estimated"] else ""
    if by_tokens["r2"] > by_duration["r2"] + R2_MARGIN:
        verdict = (
            "decode time follows the token count more than the audio length: the cost is "
            "in the per-token loop (one decoder/joint step per emitted token), so a cheaper "
            "or batched step is what lowers it"
        )
    elif by_duration["r2"] > by_tokens["r2"] + R2_MARGIN:
        verdict = "decode time follows the audio length more than the token count"
    else:
        verdict = "token count and audio length explain decode time equally well here"
    line = (
        f"Decode costs {by_tokens['slope']:.2f} ms per token{estimated} (R² "
        f"{by_tokens['r2']:.3f}) vs {by_duration['slope']:.2f} ms per audio second "
        f"(R² {by_duration['r2']:.3f}): {verdict}."
    )
    steps = analysis.get("decoder_steps")
    if steps and steps["decode_ms_per_count"] is not None:
        line += f" Per decoder step: {steps['decode_ms_per_count']:.3f} ms on average."
    return [line]


def recommendations(analysis: dict[str, Any]) -> list[str]:
    """Plain sentences, most important first; empty when nothing stands out."""
    return [
        *_attack(analysis),
        *_overhead(analysis),
        *_outliers(analysis),
        *_decode_driver(analysis),
    ]
