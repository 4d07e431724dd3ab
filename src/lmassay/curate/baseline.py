"""The bag-of-words baseline: TF-IDF of words and word pairs, and a logistic regression.

It answers the question the LM-feature classifier must: does the LM's own feature space earn its
cost? Same interface (:class:`~lmassay.curate.metrics.TextClassifier`), same cross-validation and
threshold rule; it lives in memory only (the benchmark's comparison), no model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmassay.curate.metrics import CrossValidation, check_labels, cross_validate


@dataclass(frozen=True)
class BagOfWordsClassifier:
    """A fitted TF-IDF vectoriser and logistic regression, with their cross-validation."""

    vectorizer: Any
    regression: Any
    cv: CrossValidation

    @property
    def threshold(self) -> float:
        return self.cv.threshold

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Probability of ``remove`` of each text: ``(N,)`` float64."""
        matrix = self.vectorizer.transform(list(texts))  # (N, V) sparse
        return np.asarray(self.regression.predict_proba(matrix)[:, 1], dtype=np.float64)


def _fit(texts: Sequence[str], labels: np.ndarray, c: float, seed: int) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    matrix = vectorizer.fit_transform(list(texts))  # (N, V) sparse
    regression = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(matrix, labels)
    return vectorizer, regression


def fit_bow_classifier(
    texts: Sequence[str], labels: np.ndarray, *, c: float = 10.0, seed: int = 0
) -> BagOfWordsClassifier:
    """Cross-validate, then fit on all of ``texts`` (labels: 1 = remove, 0 = keep).

    ``c`` is the inverse L2 strength (TF-IDF rows have unit norm, so a weaker penalty than the
    standardised LM features' suits them)."""
    check_labels(labels, "the labelled data")
    pool = list(texts)

    def fit_score(train: np.ndarray, train_labels: np.ndarray) -> Any:
        vectorizer, regression = _fit([pool[i] for i in train], train_labels, c, seed)
        return lambda test: regression.predict_proba(vectorizer.transform([pool[i] for i in test]))[
            :, 1
        ]

    cv = cross_validate(fit_score, labels, seed)
    vectorizer, regression = _fit(pool, labels, c, seed)
    return BagOfWordsClassifier(vectorizer, regression, cv)
