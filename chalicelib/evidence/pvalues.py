"""Tail probabilities for the evidence tests, in the standard library alone (pure).

scipy does not ship to Lambda, so the few distributions the tests need are here:
the normal (``math.erfc``), chi-square (the regularised upper incomplete gamma
function, by its series or continued fraction as in Numerical Recipes, 6.2), the
Kolmogorov distribution (its two asymptotic series, Numerical Recipes 6.14) and the
binomial with p = 1/2 (exact sums). Each agrees with scipy within 1e-12 relative
on the range ``tests/unit/test_evidence_pvalues.py`` checks (tails down to 1e-12).
"""

from __future__ import annotations

import math

_EPSILON = 1e-15
_TINY = 1e-300
_MAX_TERMS = 10_000


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_two_sided(z: float) -> float:
    """P(|Z| > |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def chi2_sf(statistic: float, degrees: float) -> float:
    """P(X > statistic) for X chi-square with ``degrees`` > 0 degrees of freedom.

    Raises ValueError for non-positive degrees of freedom.
    """
    if degrees <= 0:
        raise ValueError(f"chi-square needs positive degrees of freedom, not {degrees}")
    if statistic <= 0:
        return 1.0
    return gamma_q(degrees / 2.0, statistic / 2.0)


def gamma_q(a: float, x: float) -> float:
    """The regularised upper incomplete gamma function Q(a, x), a > 0, x >= 0."""
    if x <= 0:
        return 1.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _gamma_p_series(a, x))
    return _gamma_q_fraction(a, x)


def _log_prefactor(a: float, x: float) -> float:
    return -x + a * math.log(x) - math.lgamma(a)


def _gamma_p_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    denominator = a
    for _ in range(_MAX_TERMS):
        denominator += 1.0
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _EPSILON:
            break
    return total * math.exp(_log_prefactor(a, x))


def _gamma_q_fraction(a: float, x: float) -> float:
    # Modified Lentz's method for the continued fraction of Q(a, x).
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    fraction = d
    for index in range(1, _MAX_TERMS):
        an = -index * (index - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        step = d * c
        fraction *= step
        if abs(step - 1.0) < _EPSILON:
            break
    return math.exp(_log_prefactor(a, x)) * fraction


def kolmogorov_sf(value: float) -> float:
    """P(K > value) for the Kolmogorov distribution (the limit of sqrt(n) D_n).

    Below 1.18 the series in exp(-(2j-1)^2 pi^2 / 8 value^2) converges fast, above
    it the alternating series in exp(-2 j^2 value^2).
    """
    if value <= 0.0:
        return 1.0
    if value < 1.18:
        factor = -(math.pi**2) / (8.0 * value * value)
        cdf = sum(math.exp(factor * (2 * j - 1) ** 2) for j in range(1, 12))
        return max(0.0, 1.0 - cdf * math.sqrt(2.0 * math.pi) / value)
    total = 0.0
    for j in range(1, 101):
        term = math.exp(-2.0 * j * j * value * value)
        total += term if j % 2 else -term
        if term < _EPSILON * total:
            break
    return min(1.0, max(0.0, 2.0 * total))


def binomial_half_two_sided(successes: int, trials: int) -> float:
    """The exact two-sided p-value of ``successes`` in ``trials`` with p = 1/2.

    Twice the smaller tail, at most 1 (what scipy's ``binomtest`` gives for p = 1/2).
    """
    if trials <= 0:
        return 1.0
    smaller = min(successes, trials - successes)
    log_half = trials * math.log(0.5)
    tail = sum(
        math.exp(math.log(math.comb(trials, k)) + log_half) for k in range(smaller + 1)
    )
    return min(1.0, 2.0 * tail)
