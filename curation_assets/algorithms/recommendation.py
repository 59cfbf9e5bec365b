"""Which subset to hand the user: the default, unless another method beats it beyond its interval.

The held-out evaluation scores every method on the same seeds (seed s of every method trains the
same models and is tested on the same rows), so the comparison is paired: for a candidate c,

    d_s = score_c(s) - score_default(s),   mean d_bar,   interval d_bar -/+ t * sd(d) / sqrt(S)

with t the Student quantile at `confidence`, Bonferroni-corrected over the C candidates (each side
gets (1 - confidence) / (2 C)): the chance that *any* candidate's interval wrongly clears 0 is at
most 1 - confidence. Picking the best of ten noisy means without that correction picks noise.
A candidate displaces the default only when its whole interval is above 0; among those, the one
with the largest mean gain wins. With fewer than two seeds nothing can be shown, so the default stays.

Seeds do not resample the test set, so a paired difference can look certain (two deterministic
methods differ by the same amount on every seed) while a new test set would move it: `test_se`
adds that noise, a = sd(d)^2 / S plus b = test_se^2 under the root (for accuracies on N test rows,
about sqrt(p (1 - p) / N)). b is known, not estimated from the S seeds, so the quantile is
Student's at the Welch-Satterthwaite degrees of freedom (a + b)^2 / (a^2 / (S - 1)): S - 1 when
the seeds' spread dominates, the normal quantile when the test set's does. (Multiplying b by the
S - 1 quantile, about 5 instead of 2.5 at S = 5 with nine candidates, hid real gains of 0.1.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

# For training, k-means medoids are the default below this many picks per cluster (see default_method).
TYPICAL_BELOW = 2


def default_method(purpose: str, m: int, k: int) -> str:
    """The method that holds until the evidence says otherwise.

    For estimates, the stratified sensitivity sampler (unbiased, never worse than uniform to first
    order, and better where the held-out losses say the sensitivities help). For training, the
    draw that is stratified by cluster *and* self-weighting: proportional allocation, uniform inside
    each cluster (`stratified`), once the budget gives every cluster a few picks (m >=
    TYPICAL_BELOW * k). Inverse-probability weights that vary from row to row keep an estimate
    unbiased but add their spread to the training loss: in `benchmarks/selection_quality.py` (ten
    datasets) the sensitivity-weighted draw lost to uniform in training where its alpha < 1 won
    the estimate (synth_cluster_difficulty 1%: -0.059), while `stratified` never lost a cell with
    m >= 2k. Below 2k a random draw leaves whole regions of the data unseen or seen once, and one
    typical example per region (the medoids of a k = m clustering, weighted by their cluster's
    size) trains better: the small-budget regime of Hacohen et al. 2022 ("Active learning on a
    budget"); k-means medoids beat or tie uniform in every cell with m < 2k and lose to it only at
    m >= 2.5k on noisy labels (typical examples of a mislabelled region teach the wrong label).
    """
    if purpose not in ("train", "estimate"):
        raise ValueError(f"purpose: must be 'train' or 'estimate', got {purpose!r}")
    if purpose == "estimate":
        return "sensitivity_stratified"
    return "kmeans_centroids" if m < TYPICAL_BELOW * k else "stratified"


@dataclass(frozen=True)
class Evidence:
    method: str
    mean: float  # the method's mean score over the seeds
    gain: float  # mean of score - default's score (0 for the default itself)
    low: float  # the gain's interval
    high: float
    seeds: int

    @property
    def beats_default(self) -> bool:
        return self.low > 0.0


@dataclass(frozen=True)
class Recommendation:
    method: str
    default: str
    evidence: list[Evidence]  # best mean first
    reason: str


def _half_width(d: np.ndarray, test_se: float, side: float) -> float:
    """Half the interval of mean(d) with the seeds' variance a and the known test-set variance b."""
    seeds = d.size
    if seeds < 2:
        return np.inf
    a, b = d.var(ddof=1) / seeds, float(test_se) ** 2
    if a + b == 0.0:
        return 0.0
    df = (a + b) ** 2 / (a * a / (seeds - 1)) if a > 0 else np.inf
    return float(stats.t.ppf(1.0 - side, df) * np.sqrt(a + b))


def recommend(scores: dict[str, np.ndarray], default: str, *, confidence: float = 0.9,
              test_se: float = 0.0) -> Recommendation:
    """`scores[method]`: one score per seed, higher is better, the same seeds in the same order for
    every method. Returns the default unless a candidate's paired gain over it clears 0 with
    family-wise `confidence`."""
    if default not in scores:
        raise ValueError(f"recommend: the default {default!r} has no scores; scored: {sorted(scores)}")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence: must be in [0.5, 1), got {confidence!r}")
    base = np.asarray(scores[default], dtype=np.float64)
    candidates = [m for m in scores if m != default]
    for m in candidates:
        if np.shape(scores[m]) != base.shape:
            raise ValueError(f"recommend: {m!r} has {np.size(scores[m])} scores, the default {base.size}; "
                             "every method needs the same seeds")
    seeds = base.size
    side = (1.0 - confidence) / (2 * max(1, len(candidates)))
    evidence = [Evidence(default, float(base.mean()), 0.0, 0.0, 0.0, seeds)]
    for m in candidates:
        d = np.asarray(scores[m], dtype=np.float64) - base
        half = _half_width(d, test_se, side)
        evidence.append(Evidence(m, float(np.mean(scores[m])), float(d.mean()), float(d.mean() - half),
                                 float(d.mean() + half), seeds))
    evidence.sort(key=lambda e: -e.mean)
    winners = [e for e in evidence if e.beats_default]
    if not winners:
        reason = (f"no method beats {default} beyond its {confidence:.0%} interval over {seeds} seeds"
                  if seeds >= 2 else f"{seeds} seed: too few to show any method beats {default}")
        return Recommendation(default, default, evidence, reason)
    best = max(winners, key=lambda e: e.gain)
    return Recommendation(best.method, default, evidence,
                          f"{best.method} beats {default} by {best.gain:+.4f} (interval {best.low:+.4f} to "
                          f"{best.high:+.4f}, {confidence:.0%} over {len(candidates)} candidates, {seeds} seeds)")
