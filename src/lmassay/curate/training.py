"""``lmassay curate train``: read labelled texts, take the LM's features, cross-validate, fit, save.

:func:`fit_lm_classifier` is the in-memory part (a loaded model, texts and labels in; a
:class:`LmClassifier` out), with the same interface as the bag-of-words baseline;
:func:`train_classifier` is the command: it reads, checks, fits and writes the classifier folder
(:mod:`lmassay.curate.classifier`) with its report, all or nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmassay._atomic import atomic_write_json, atomic_write_text
from lmassay.curate.classifier import (
    CLASSIFIER_FILES,
    REPORT_HTML,
    REPORT_JSON,
    Classifier,
    LinearModel,
    fit_linear,
)
from lmassay.curate.config import TrainConfig
from lmassay.curate.features import (
    DEFAULT_MAX_TOKENS,
    POOLINGS,
    FeatureSpec,
    Pooling,
    extract,
    features,
    n_layers,
    resolve_layer,
)
from lmassay.curate.labelled import read_labelled
from lmassay.curate.metrics import CrossValidation, check_labels, cross_validate
from lmassay.curate.report import train_report_html
from lmassay.instruction_data import source_digest
from lmassay.output_folder import OutputFolder
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import provenance, utc_now

if TYPE_CHECKING:
    from lmassay.attest.model_loading import LoadedModel

TRAIN_REPORT_SCHEMA = "lmassay.curate-train-report/v1"


@dataclass(frozen=True)
class LmClassifier:
    """A classifier on ``loaded``'s features (the LM stays loaded to score new texts)."""

    loaded: LoadedModel
    spec: FeatureSpec
    linear: LinearModel
    cv: CrossValidation
    token_budget: int = 4096

    @property
    def threshold(self) -> float:
        return self.cv.threshold

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Probability of ``remove`` of each text: ``(N,)`` float64."""
        return self.linear.scores(
            features(self.loaded, texts, self.spec, token_budget=self.token_budget)
        )


def cross_validate_features(
    x: np.ndarray, labels: np.ndarray, *, c: float, seed: int
) -> CrossValidation:
    """Cross-validation of the standardised logistic regression on features ``x`` ``(N, D)``."""

    def fit_score(train: np.ndarray, train_labels: np.ndarray) -> Any:
        linear = fit_linear(x[train], train_labels, c=c, seed=seed)
        return lambda test: linear.scores(x[test])

    return cross_validate(fit_score, labels, seed)


def fit_lm_classifier(
    loaded: LoadedModel,
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    layer: int | None = None,
    pooling: Pooling = "mean",
    max_tokens: int | None = None,
    c: float = 1.0,
    seed: int = 0,
    token_budget: int = 4096,
    progress: Progress | None = None,
) -> LmClassifier:
    """Cross-validate, then fit on all of ``texts`` (labels: 1 = remove, 0 = keep)."""
    check_labels(labels, "the labelled data")
    spec = feature_spec(loaded, layer, pooling, max_tokens)
    task = (progress or NullProgress()).task("features", len(texts))
    x = features(loaded, texts, spec, token_budget=token_budget, progress=task)  # (N, D)
    cv = cross_validate_features(x, labels, c=c, seed=seed)
    linear = fit_linear(x, labels, c=c, seed=seed)
    return LmClassifier(loaded, spec, linear, cv, token_budget)


def feature_spec(
    loaded: LoadedModel, layer: int | None, pooling: Pooling, max_tokens: int | None
) -> FeatureSpec:
    """The feature rule for ``loaded``: ``--layer`` resolved, ``--max-tokens`` (default
    :data:`~lmassay.curate.features.DEFAULT_MAX_TOKENS`) capped at the model's context."""
    longest = min(max_tokens or DEFAULT_MAX_TOKENS, loaded.max_length)
    return FeatureSpec(resolve_layer(layer, n_layers(loaded.model)), pooling, longest)


def sweep(
    loaded: LoadedModel,
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    max_tokens: int,
    c: float,
    seed: int,
    token_budget: int,
    progress: Progress,
) -> list[dict[str, Any]]:
    """Cross-validated metrics of every layer and pooling (one forward pass for all)."""
    layers = list(range(n_layers(loaded.model) + 1))
    task = progress.task("features of every layer", len(texts))
    found = extract(
        loaded, texts, layers, list(POOLINGS), max_tokens=max_tokens,
        token_budget=token_budget, progress=task,
    )  # fmt: skip
    rows = []
    for (layer, pooling), x in sorted(found.items()):
        cv = cross_validate_features(x, labels, c=c, seed=seed)
        rows.append({"layer": layer, "pooling": pooling, **cv.metrics.to_json()})
    return rows


@dataclass(frozen=True)
class TrainResult:
    """What ``curate train`` wrote: the folder, the classifier and the report."""

    out: Path
    classifier: Classifier
    report: dict[str, Any]


def train_classifier(config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """The ``curate train`` recipe: check, read, load, fit, write ``config.out`` as one set."""
    progress = progress or NullProgress()
    started = time.perf_counter()
    config.validate()
    data = read_labelled(
        config.labelled,
        text_field=config.text_field,
        label_field=config.label_field,
        category_field=config.category_field,
        split=config.split,
    )
    check_labels(data.labels, f"--labelled {config.labelled}")
    with OutputFolder(config.out, owned=CLASSIFIER_FILES) as folder:
        progress.log(f"loading {config.model}")
        loaded = config.load(config.model)
        fitted = fit_lm_classifier(
            loaded, data.texts, data.labels, layer=config.layer, pooling=config.pooling,
            max_tokens=config.max_tokens, c=config.c, seed=config.seed,
            token_budget=config.token_budget, progress=progress,
        )  # fmt: skip
        swept = None
        if config.sweep:
            swept = sweep(
                loaded, data.texts, data.labels, max_tokens=fitted.spec.max_tokens,
                c=config.c, seed=config.seed, token_budget=config.token_budget,
                progress=progress,
            )  # fmt: skip
        card = _card(config, loaded, fitted, time.perf_counter() - started)
        classifier = Classifier(
            fitted.linear, fitted.spec, fitted.threshold, fitted.cv.scores, fitted.cv.labels, card
        )
        report = {
            "schema": TRAIN_REPORT_SCHEMA,
            **{k: card[k] for k in ("model", "data", "features", "threshold", "threshold_rule")},
            "cv": card["cv"],
            "per_category": per_category(fitted.cv, data.categories),
            "sweep": swept,
            "provenance": card["provenance"],
        }
        with folder.writing() as staging:
            classifier.save(staging)
            atomic_write_json(staging / REPORT_JSON, report)
            atomic_write_text(staging / REPORT_HTML, train_report_html(report))
        out = folder.commit()
    return TrainResult(out, classifier, report)


def per_category(cv: CrossValidation, categories: Sequence[str | None]) -> list[dict[str, Any]]:
    """For each category: its remove and keep examples and the cross-validated share of each
    removed at the default threshold."""
    rows = []
    flagged = cv.scores >= cv.threshold
    names = sorted({c for c in categories if c is not None})
    for name in names:
        mine = np.asarray([c == name for c in categories])  # (N,)
        remove, keep = mine & (cv.labels == 1), mine & (cv.labels == 0)
        rows.append(
            {
                "category": name,
                "n_remove": int(remove.sum()),
                "n_keep": int(keep.sum()),
                "recall": float(flagged[remove].mean()) if remove.any() else None,
                "false_positive_rate": float(flagged[keep].mean()) if keep.any() else None,
            }
        )
    return rows


def _card(
    config: TrainConfig, loaded: LoadedModel, fitted: LmClassifier, seconds: float
) -> dict[str, Any]:
    """``classifier.json`` but for the fields :meth:`Classifier.save` adds."""
    digest = source_digest(config.labelled)
    model = {
        "name": loaded.name,
        "digest": loaded.digest.to_json(),
        "tokenizer_digest": loaded.tokenizer_digest.to_json(),
        "architecture": type(loaded.model).__name__,
        "n_layers": n_layers(loaded.model),
        "hidden_size": int(loaded.model.config.hidden_size),
    }
    if loaded.hub is not None:
        model["hub"] = loaded.hub.to_json()
    resolved = dataclasses.asdict(config)
    return {
        "model": model,
        "data": {
            "source": config.labelled,
            "digest": None if digest is None else digest.to_json(),
            "n_examples": len(fitted.cv.labels),
            "text_field": config.text_field,
            "label_field": config.label_field,
        },
        "features": fitted.spec.to_json(),
        "classifier": {"kind": "logistic-regression", "standardised": True, "c": config.c},
        "threshold": fitted.threshold,
        "threshold_rule": "the cross-validated score that maximises F1",
        "cv": {"folds": fitted.cv.folds, **fitted.cv.metrics.to_json()},
        "provenance": {
            **provenance(resolved, config.seed),
            "created": utc_now(),
            "seconds": round(seconds, 3),
            "device": loaded.device,
            "dtype": loaded.dtype,
        },
    }
