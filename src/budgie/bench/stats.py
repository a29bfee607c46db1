"""Pure statistics with the conventions of the seed analysis, so its numbers reproduce exactly.

Conventions (issue 3): population standard deviation; nearest-rank percentile
``pXX = sorted[floor(XX/100 * n)]`` clamped to ``n - 1``; ordinary least squares with
``R² = 1 - SSres/SStot``, where R² is 0 when SStot is 0 and the slope is 0 when x is constant.
Everything is O(n log n) at most (one sort per summary) so 100,000-run files stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = FloatArray | Sequence[float]


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one series (all in the series' unit)."""

    mean: float
    min: float
    max: float
    p50: float
    p95: float
    std: float


@dataclass(frozen=True)
class Fit:
    """``y = slope * x + intercept`` with its coefficient of determination."""

    slope: float
    intercept: float
    r2: float


@dataclass(frozen=True)
class Fit2:
    """``y = a * x1 + b * x2 + c`` with its coefficient of determination."""

    a: float
    b: float
    c: float
    r2: float


def _array(values: ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("statistics need a non-empty 1-D series")
    return arr


def mean(values: ArrayLike) -> float:
    """Arithmetic mean."""
    return float(np.mean(_array(values)))


def pstd(values: ArrayLike) -> float:
    """Population standard deviation (divide by n, not n - 1), as the seed analysis did."""
    return float(np.std(_array(values)))


def nearest_rank(sorted_values: FloatArray, q: float) -> float:
    """Percentile ``q`` (0-100) of already sorted values: ``sorted[floor(q/100*n)]``, clamped."""
    n = sorted_values.size
    index = min(n - 1, math.floor(q / 100.0 * n))
    return float(sorted_values[index])


def percentile(values: ArrayLike, q: float) -> float:
    """Nearest-rank percentile of unsorted values (see :func:`nearest_rank`)."""
    return nearest_rank(np.sort(_array(values)), q)


def summarize(values: ArrayLike) -> Summary:
    """Mean, min, max, p50, p95 and population std with a single sort."""
    arr = _array(values)
    ordered = np.sort(arr)
    return Summary(
        mean=float(np.mean(arr)),
        min=float(ordered[0]),
        max=float(ordered[-1]),
        p50=nearest_rank(ordered, 50),
        p95=nearest_rank(ordered, 95),
        std=float(np.std(arr)),
    )


def r_squared(y: FloatArray, predicted: FloatArray) -> float:
    """``1 - SSres/SStot``; 0 when y is constant (nothing to explain)."""
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    if ss_tot == 0.0:
        return 0.0
    ss_res = float(np.sum((y - predicted) ** 2))
    return 1.0 - ss_res / ss_tot


def linear_fit(x: ArrayLike, y: ArrayLike) -> Fit:
    """Least-squares line through (x, y); a constant x gives slope 0 and intercept mean(y)."""
    xs, ys = _array(x), _array(y)
    if xs.size != ys.size:
        raise ValueError("x and y differ in length")
    x_mean, y_mean = float(np.mean(xs)), float(np.mean(ys))
    dx = xs - x_mean
    sxx = float(np.dot(dx, dx))
    slope = 0.0 if sxx == 0.0 else float(np.dot(dx, ys - y_mean)) / sxx
    intercept = y_mean - slope * x_mean
    return Fit(slope=slope, intercept=intercept, r2=r_squared(ys, slope * xs + intercept))


MAX_CORRELATION = 0.999
"""Above this |Pearson r| between the two predictors, their coefficients are not identifiable."""


def linear_fit2(x1: ArrayLike, x2: ArrayLike, y: ArrayLike) -> Fit2 | None:
    """Least squares on two predictors plus a constant.

    Returns None when the predictors cannot be separated (fewer than 4 points, either one
    constant, or the two (nearly) collinear, |r| > MAX_CORRELATION): then the split between
    them is decided by noise (huge opposite coefficients), an artefact rather than a finding.
    """
    a1, a2, ys = _array(x1), _array(x2), _array(y)
    if not a1.size == a2.size == ys.size:
        raise ValueError("x1, x2 and y differ in length")
    if ys.size < 4:
        return None
    # Centre and scale the columns so the rank test does not depend on units.
    c1, c2 = a1 - np.mean(a1), a2 - np.mean(a2)
    n1, n2 = float(np.linalg.norm(c1)), float(np.linalg.norm(c2))
    if n1 == 0.0 or n2 == 0.0:
        return None
    design = np.column_stack([c1 / n1, c2 / n2])
    if abs(float(np.dot(design[:, 0], design[:, 1]))) > MAX_CORRELATION:
        return None
    coef, *_ = np.linalg.lstsq(design, ys - np.mean(ys), rcond=None)
    a, b = float(coef[0]) / n1, float(coef[1]) / n2
    c = float(np.mean(ys)) - a * float(np.mean(a1)) - b * float(np.mean(a2))
    return Fit2(a=a, b=b, c=c, r2=r_squared(ys, a * a1 + b * a2 + c))
