"""Power-law exponent of a degree distribution by the Clauset–Shalizi–Newman method (``powerlaw``)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import powerlaw

MIN_FIT_NODES = 50
"""Fewest nodes (overall, and in the fitted tail) for which a power-law exponent is reported."""
LIKELIHOOD_RATIO_P = 0.1
"""Power law is rejected when an exponential fits the tail better with this significance (CSN 2009)."""


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_power_law`.

    ``gamma`` is the exponent when a power law is a defensible description, else NaN with ``reason``;
    ``gamma_mle`` is the maximum-likelihood exponent whatever the verdict (NaN when no fit ran).
    """

    gamma: float
    reason: str | None
    gamma_mle: float
    xmin: float
    n_tail: int
    loglikelihood_ratio: float
    p_value: float


def fit_power_law(degrees: np.ndarray) -> PowerLawFit:
    """Clauset–Shalizi–Newman fit of a degree sequence: discrete MLE, ``x_min`` by least KS distance.

    Zero degrees (isolated nodes) are left out. The fit runs whenever there are at least three
    distinct positive degrees (``gamma_mle``); ``gamma`` is NaN, with the reason, when: fewer than
    ``MIN_FIT_NODES`` positive degrees, fewer than three distinct ones, fewer than ``MIN_FIT_NODES``
    nodes at or above ``x_min``, or the log-likelihood ratio against an exponential tail is negative
    with p < ``LIKELIHOOD_RATIO_P`` (Vuong's test, as in CSN 2009 §5). The bootstrap goodness-of-fit
    p-value is not computed: it costs thousands of refits, and the exponential alternative already
    rejects the binomial degrees of random sparse layers.
    """
    values = np.asarray(degrees)
    if values.ndim != 1:
        raise ValueError(f"degrees must be 1-D, got shape {values.shape}")
    positive = values[values > 0].astype(float)
    nan = math.nan
    too_few = (f"too few linked nodes to fit a power law ({positive.size} < {MIN_FIT_NODES})"
               if positive.size < MIN_FIT_NODES else None)
    if np.unique(positive).size < 3:
        return PowerLawFit(nan, too_few or "fewer than 3 distinct positive degrees: no distribution to fit",
                           nan, nan, 0, nan, nan)
    try:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            warnings.simplefilter("ignore")
            fit = powerlaw.Fit(positive, discrete=True, verbose=0)
            ratio, p_value = fit.distribution_compare("power_law", "exponential")
    except ValueError as error:  # powerlaw gives up on some tiny samples
        return PowerLawFit(nan, too_few or f"power-law fit failed: {error}", nan, nan, 0, nan, nan)
    gamma_mle, xmin = float(fit.power_law.alpha), float(fit.power_law.xmin)
    n_tail = int((positive >= xmin).sum())
    ratio, p_value = float(ratio), float(p_value)
    reason = too_few
    if reason is None and n_tail < MIN_FIT_NODES:
        reason = f"too few nodes in the fitted tail ({n_tail} < {MIN_FIT_NODES} at degree >= {xmin:g})"
    elif reason is None and ratio < 0 and p_value < LIKELIHOOD_RATIO_P:
        reason = (f"power law rejected: an exponential fits the tail better "
                  f"(log-likelihood ratio {ratio:.3g}, p = {p_value:.3g})")
    return PowerLawFit(gamma=gamma_mle if reason is None else nan, reason=reason, gamma_mle=gamma_mle,
                       xmin=xmin, n_tail=n_tail, loglikelihood_ratio=ratio, p_value=p_value)
