"""Statistics conventions of the seed analysis, WER, and the renderers' rounding rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from budgie.bench import stats
from budgie.bench.report import ms, num, pct
from budgie.bench.wer import edit_distance, normalize_words, word_error_rate

TEN = [float(v) for v in range(10, 0, -1)]  # 10..1, unsorted on purpose


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        (TEN, 50, 6.0),  # sorted[floor(0.5*10)] = sorted[5]
        (TEN, 95, 10.0),  # sorted[9]
        (TEN, 0, 1.0),
        (TEN, 100, 10.0),  # index 10 clamped to n-1
        ([3.0, 1.0], 50, 3.0),  # sorted[1], not the interpolated 2.0
        ([7.5], 95, 7.5),
        ([float(v) for v in range(1, 101)], 95, 96.0),  # sorted[95]
    ],
)
def test_nearest_rank_percentile(values: list[float], q: float, expected: float) -> None:
    assert stats.percentile(values, q) == expected


def test_population_std_and_mean() -> None:
    data = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]  # textbook: mean 5, population std 2
    assert stats.mean(data) == 5.0
    assert stats.pstd(data) == 2.0
    assert stats.pstd([3.0]) == 0.0


def test_summarize() -> None:
    s = stats.summarize(TEN)
    assert (s.mean, s.min, s.max, s.p50, s.p95) == (5.5, 1.0, 10.0, 6.0, 10.0)
    assert s.std == pytest.approx(math.sqrt(8.25))


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]]])
def test_empty_or_2d_series_is_rejected(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        stats.summarize(bad)


def test_linear_fit_exact_line() -> None:
    fit = stats.linear_fit([1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, 9.0])
    assert fit.slope == pytest.approx(2.0)
    assert fit.intercept == pytest.approx(1.0)
    assert fit.r2 == pytest.approx(1.0)


def test_linear_fit_matches_numpy_polyfit() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 30, 200)
    y = 5.9 * x + 4 + rng.normal(0, 20, 200)
    fit = stats.linear_fit(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope)
    assert fit.intercept == pytest.approx(intercept)
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([2.0, 2.0, 2.0], [1.0, 2.0, 6.0], (0.0, 3.0, 0.0)),  # constant x: slope 0, mean
        ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0], (0.0, 4.0, 0.0)),  # constant y: SStot 0 -> R² 0
        ([5.0], [7.0], (0.0, 7.0, 0.0)),  # one point
    ],
)
def test_linear_fit_degenerate(
    x: list[float], y: list[float], expected: tuple[float, float, float]
) -> None:
    fit = stats.linear_fit(x, y)
    assert (fit.slope, fit.intercept, fit.r2) == pytest.approx(expected)


def test_linear_fit2_recovers_plane() -> None:
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    tokens = np.array([10.0, 7.0, 20.0, 12.0, 30.0, 18.0])
    y = 3.0 * d + 0.5 * tokens + 2.0
    fit = stats.linear_fit2(d, tokens, y)
    assert fit is not None
    assert (fit.a, fit.b, fit.c, fit.r2) == pytest.approx((3.0, 0.5, 2.0, 1.0))


@pytest.mark.parametrize(
    ("x1", "x2"),
    [
        ([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]),  # collinear
        ([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0, 8.0, 10.01]),  # nearly: r > 0.999
        ([1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]),  # constant
        ([1.0, 2.0, 3.0], [3.0, 1.0, 2.0]),  # too few points
    ],
)
def test_linear_fit2_unidentifiable(x1: list[float], x2: list[float]) -> None:
    assert stats.linear_fit2(x1, x2, [1.0] * len(x1)) is None


# --- WER -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Clinical question: Follow-up.", ("clinical", "question", "follow", "up")),
        ("Don't STOP, it's fine!", ("don't", "stop", "it's", "fine")),
        ("24 mm x 21\nmm", ("24", "mm", "x", "21", "mm")),
        ("  ...  ", ()),
    ],
)
def test_normalize_words(text: str, words: tuple[str, ...]) -> None:
    assert normalize_words(text) == words


@pytest.mark.parametrize(
    ("ref", "hyp", "distance"),
    [
        ("a b c", "a b c", 0),
        ("a b c", "a x c", 1),  # substitution
        ("a b c", "a c", 1),  # deletion
        ("a b c", "a b b c", 1),  # insertion
        ("a b c", "", 3),
        ("", "a b", 2),
        ("kitten sat on the mat", "sitting sat on mat the", 3),
        ("x y z w", "w z y x", 4),
    ],
)
def test_edit_distance(ref: str, hyp: str, distance: int) -> None:
    assert edit_distance(tuple(ref.split()), tuple(hyp.split())) == distance


def reference_distance(ref: tuple[str, ...], hyp: tuple[str, ...]) -> int:
    """The textbook dynamic programme, to check the bit-parallel version against."""
    previous = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, 1):
        current = [i]
        for j, hw in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (rw != hw)))
        previous = current
    return previous[-1]


def test_edit_distance_matches_dynamic_programme() -> None:
    rng = np.random.default_rng(3)
    for _ in range(500):  # lengths past 64 words exercise multi-word bit vectors
        ref = tuple(rng.choice(list("abcd"), rng.integers(0, 90)).tolist())
        hyp = tuple(rng.choice(list("abcde"), rng.integers(0, 90)).tolist())
        assert edit_distance(ref, hyp) == reference_distance(ref, hyp)


def test_word_error_rate() -> None:
    assert word_error_rate("The cat sat.", "the cat sat") == 0.0
    assert word_error_rate("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(1 / 6)
    assert word_error_rate("", "anything") is None


# --- rounding of the renderers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (2.325, 2, "2.33"),  # half-up on the decimal form, as the seed report
        (28.625, 2, "28.63"),  # binary-exact .5: Python's format would give 28.62
        (75.64, 1, "75.6"),
        (-0.004, 1, "0.0"),
        (-1.25, 1, "-1.3"),
        (float("nan"), 1, "n/a"),
        (None, 1, "n/a"),
    ],
)
def test_num_rounding(value: float | None, digits: int, text: str) -> None:
    assert num(value, digits) == text


@pytest.mark.parametrize(
    ("value", "text"), [(0.0, "0"), (0.008, "~0"), (0.03, "~0"), (0.05, "0.1"), (305.0, "305.0")]
)
def test_ms_format(value: float, text: str) -> None:
    assert ms(value) == text


@pytest.mark.parametrize(
    ("value", "text"), [(0.461, "46.1 %"), (3.1e-5, "< 0.1 %"), (0.0, "0.0 %"), (None, "n/a")]
)
def test_pct_format(value: float | None, text: str) -> None:
    assert pct(value) == text
