"""Drift: does a new batch of data differ from the reference data?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scipy import stats


@dataclass(frozen=True)
class DriftResult:
    """Two-sample tests of a new batch against the reference batch.

    Attributes:
        score_p_value: Kolmogorov-Smirnov p-value comparing anomaly scores.
        embedding_p_value: The smallest per-dimension KS p-value on the embeddings
            of the first model, Bonferroni-corrected for the number of dimensions.
        p_value: The smaller of the two, doubled (Bonferroni over both tests).
        drift: True when ``p_value < alpha``.
        alpha: Significance level of the decision.
    """

    score_p_value: float
    embedding_p_value: float
    p_value: float
    drift: bool
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "p_value": self.p_value,
            "drift": self.drift,
            "alpha": self.alpha,
            "score_p_value": self.score_p_value,
            "embedding_p_value": self.embedding_p_value,
        }


def drift_test(
    detector: Any, reference: Any, new: Any, alpha: float = 0.05
) -> DriftResult:
    """Test whether ``new`` comes from the same distribution as ``reference``.

    Both tests are distribution-free and need no training: one compares the two
    batches' anomaly scores, the other each embedding dimension.
    """
    score_p = float(
        stats.ks_2samp(detector.score(reference), detector.score(new)).pvalue
    )
    model = detector.models_[0]
    codes_ref, codes_new = model.transform(reference), model.transform(new)
    per_dim = [
        stats.ks_2samp(codes_ref[:, d], codes_new[:, d]).pvalue
        for d in range(codes_ref.shape[1])
    ]
    embedding_p = float(min(1.0, min(per_dim) * len(per_dim)))
    p_value = float(min(1.0, 2 * min(score_p, embedding_p)))
    return DriftResult(score_p, embedding_p, p_value, bool(p_value < alpha), alpha)
