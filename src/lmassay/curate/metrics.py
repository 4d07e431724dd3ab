"""Cross-validated scores of a text classifier and what they say: AUC, precision and recall at a
threshold, and the thresholds the filter uses (the default, and one for a target recall).

Labels are 1 for ``remove`` and 0 for ``keep``; a score is the classifier's probability of
``remove``, and an item is removed when its score is at least the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lmassay.errors import InputError

MIN_PER_LABEL = 4
"""Fewest examples of each label that cross-validation (and a classifier) needs."""
MAX_FOLDS = 5


@dataclass(frozen=True)
class Metrics:
    """Precision, recall and AUC of scores against labels at one threshold."""

    threshold: float
    precision: float
    recall: float
    f1: float
    auc: float
    n_remove: int
    n_keep: int
    n_flagged: int

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "auc": self.auc,
            "n_remove": self.n_remove,
            "n_keep": self.n_keep,
            "n_flagged": self.n_flagged,
        }


def check_labels(labels: np.ndarray, what: str) -> None:
    """Refuse labels with fewer than :data:`MIN_PER_LABEL` of ``remove`` or of ``keep``."""
    n_remove = int(labels.sum())
    n_keep = int(len(labels) - n_remove)
    if min(n_remove, n_keep) < MIN_PER_LABEL:
        raise InputError(
            f"{what} has {n_remove} 'remove' and {n_keep} 'keep' examples",
            f"label at least {MIN_PER_LABEL} of each (tens are better)",
        )


def n_folds(labels: np.ndarray) -> int:
    """Folds of stratified cross-validation: 5, or fewer when a label has fewer examples."""
    return min(MAX_FOLDS, int(labels.sum()), int(len(labels) - labels.sum()))


def cross_validated_scores(
    fit_score: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]],
    n: int,
    labels: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Out-of-fold scores of ``n`` items: ``fit_score(train_index, labels)`` returns a scorer of
    index arrays; each item is scored by the model fitted without its fold (stratified folds,
    shuffled with ``seed``)."""
    from sklearn.model_selection import StratifiedKFold

    scores = np.empty(n, dtype=np.float64)  # (N,)
    folds = StratifiedKFold(n_splits=n_folds(labels), shuffle=True, random_state=seed)
    for train, test in folds.split(np.zeros(n), labels):
        scorer = fit_score(train, labels[train])
        scores[test] = scorer(test)
    return scores


def metrics_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Metrics:
    """Precision, recall, F1 and AUC of ``scores`` (remove when ``score >= threshold``)."""
    from sklearn.metrics import roc_auc_score

    flagged = scores >= threshold
    positive = labels == 1
    true_pos = int((flagged & positive).sum())
    n_flagged = int(flagged.sum())
    n_remove = int(positive.sum())
    precision = true_pos / n_flagged if n_flagged else math.nan
    recall = true_pos / n_remove if n_remove else math.nan
    f1 = 2 * true_pos / (n_flagged + n_remove) if n_flagged + n_remove else math.nan
    auc = float(roc_auc_score(labels, scores)) if 0 < n_remove < len(labels) else math.nan
    return Metrics(
        threshold=float(threshold),
        precision=precision,
        recall=recall,
        f1=f1,
        auc=auc,
        n_remove=n_remove,
        n_keep=int(len(labels) - n_remove),
        n_flagged=n_flagged,
    )


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The default threshold: the cross-validated score that maximises F1 (on a tie, the
    highest such score: fewer removals), halfway down to the next lower score so that a new
    item scoring like the lowest removed one is removed too."""
    order = np.argsort(-scores, kind="stable")  # (N,) highest score first
    ranked = scores[order]  # (N,)
    true_pos = np.cumsum(labels[order] == 1)  # (N,) removes among the top i + 1
    last_of_tie = np.append(ranked[1:] != ranked[:-1], True)  # (N,) a threshold can cut here
    n_flagged = np.arange(1, len(scores) + 1)  # (N,)
    f1 = np.where(last_of_tie, 2 * true_pos / (n_flagged + int(labels.sum())), -1.0)  # (N,)
    best = int(np.argmax(f1))  # the first maximum: the highest threshold
    below = ranked[best + 1] if best + 1 < len(ranked) else ranked[best]
    return float((ranked[best] + below) / 2)


def threshold_for_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> float:
    """The highest threshold whose recall on the cross-validated scores is at least ``recall``:
    the ``ceil(recall × n_remove)``-th highest score of the ``remove`` examples."""
    if not 0.0 < recall <= 1.0:
        raise InputError(f"--target-recall {recall} is not in (0, 1]", "pass e.g. 0.95")
    positives = np.sort(scores[labels == 1])[::-1]  # (P,) descending
    k = max(1, math.ceil(recall * len(positives) - 1e-9))
    return float(positives[k - 1])


@dataclass(frozen=True)
class CrossValidation:
    """Out-of-fold scores of the labelled examples, the default threshold chosen on them, and the
    metrics there."""

    scores: np.ndarray  # (N,) float64
    labels: np.ndarray  # (N,) int8, 1 = remove
    folds: int
    threshold: float
    metrics: Metrics


def cross_validate(
    fit_score: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]],
    labels: np.ndarray,
    seed: int,
) -> CrossValidation:
    """:func:`cross_validated_scores`, the F1-best threshold on them and the metrics there."""
    scores = cross_validated_scores(fit_score, len(labels), labels, seed)
    threshold = best_f1_threshold(scores, labels)
    return CrossValidation(
        scores=scores,
        labels=labels.astype(np.int8),
        folds=n_folds(labels),
        threshold=threshold,
        metrics=metrics_at(scores, labels, threshold),
    )


class TextClassifier(Protocol):
    """What the LM-feature classifier and the bag-of-words baseline both offer: scores of new
    texts (probability of ``remove``), the default threshold and the cross-validation."""

    @property
    def threshold(self) -> float: ...

    @property
    def cv(self) -> CrossValidation: ...

    def scores(self, texts: Sequence[str]) -> np.ndarray: ...
