"""How far one more honest retrain may land from the retrain ensemble's mean.

Every tolerance that the retrains' seed spread widens (the forget band, the probes' and the
attacks' seed bands, the MIA band) claims to hold one more honest retrain with probability
``confidence``. The spread is estimated from K members, so that claim needs Student's t with
K − 1 degrees of freedom, not the normal quantile: at K = 5 and 95%, t is 2.78 where the
normal's 1.96 holds only about 88% of honest retrains. Where a known sampling variance is added
(a binomial score, an AUC's standard error), the degrees of freedom are Welch–Satterthwaite's,
so the quantile runs from t's (seed spread dominates) to the normal's (sampling error does).
"""

from __future__ import annotations

import math

from scipy.stats import t as student_t


def retrain_quantile(dof: float, confidence: float = 0.95) -> float:
    """The two-sided ``confidence`` quantile of Student's t with ``dof`` degrees of freedom (the
    normal's at ``dof = inf``)."""
    return float(student_t.ppf(0.5 + confidence / 2, dof))


def prediction_band(
    spread: float, members: int, known_variance: float = 0.0, confidence: float = 0.95
) -> float:
    """Half-width ``t_ν · sqrt(s²·(1 + 1/K) + v)`` of the interval that holds one more honest
    retrain's value around the mean of ``members`` (K) retrains whose sample standard deviation
    is ``spread`` (s), plus a ``known_variance`` (v) from sampling. ``ν = (K − 1)·(total /
    seed term)²`` (Welch–Satterthwaite, v known exactly); with fewer than two members, or no
    spread, only ``v`` counts, at the normal quantile."""
    seed_variance = spread**2 * (1 + 1 / members) if members >= 2 else 0.0
    total = seed_variance + max(known_variance, 0.0)
    if total <= 0.0:
        return 0.0
    dof = (members - 1) * (total / seed_variance) ** 2 if seed_variance > 0.0 else math.inf
    return retrain_quantile(dof, confidence) * math.sqrt(total)
