"""Tail probabilities without scipy (chalicelib.evidence.pvalues), against scipy."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest, chi2, kstwobign, norm

from chalicelib.evidence.pvalues import (
    binomial_half_two_sided,
    chi2_sf,
    kolmogorov_sf,
    normal_sf,
    normal_two_sided,
)

RELATIVE = 1e-6


@pytest.mark.parametrize("z", [-4.0, -1.0, 0.0, 0.5, 1.959964, 3.0, 8.0, 20.0])
def test_normal_tails_match_scipy(z: float) -> None:
    assert normal_sf(z) == pytest.approx(norm.sf(z), rel=RELATIVE)
    assert normal_two_sided(z) == pytest.approx(2 * norm.sf(abs(z)), rel=RELATIVE)


@pytest.mark.parametrize("degrees", [1, 2, 3, 4, 7, 10, 29, 100, 1000])
@pytest.mark.parametrize("quantile", [1e-6, 0.01, 0.3, 0.5, 0.9, 0.999, 1 - 1e-12])
def test_chi_square_tail_matches_scipy_across_its_range(
    degrees: int, quantile: float
) -> None:
    statistic = chi2.ppf(quantile, degrees)
    assert chi2_sf(statistic, degrees) == pytest.approx(
        chi2.sf(statistic, degrees), rel=RELATIVE
    )


@pytest.mark.parametrize("statistic", [0.0, 1e-9, 0.5, 3.84, 40.0, 200.0, 1000.0])
def test_chi_square_tail_matches_scipy_on_one_degree(statistic: float) -> None:
    assert chi2_sf(statistic, 1) == pytest.approx(chi2.sf(statistic, 1), rel=RELATIVE)


def test_chi_square_refuses_no_degrees_of_freedom() -> None:
    with pytest.raises(ValueError, match="needs positive degrees of freedom"):
        chi2_sf(1.0, 0)


@pytest.mark.parametrize(
    "value", [0.0, 0.1, 0.3, 0.5, 0.8, 1.0, 1.17, 1.18, 1.19, 1.36, 1.63, 2.0, 3.0, 5.0]
)
def test_kolmogorov_tail_matches_scipy(value: float) -> None:
    assert kolmogorov_sf(value) == pytest.approx(kstwobign.sf(value), rel=RELATIVE)


@pytest.mark.parametrize(
    ("successes", "trials"),
    [(0, 0), (0, 1), (0, 5), (2, 10), (5, 10), (9, 10), (3, 24), (12, 24), (40, 200)],
)
def test_exact_binomial_matches_scipy(successes: int, trials: int) -> None:
    expected = 1.0 if trials == 0 else binomtest(successes, trials, 0.5).pvalue
    assert binomial_half_two_sided(successes, trials) == pytest.approx(
        expected, rel=RELATIVE
    )
