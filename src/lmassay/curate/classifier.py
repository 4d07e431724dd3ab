"""The curate classifier: a logistic regression on standardised LM features, and its folder.

A classifier folder (written by ``lmassay curate train``, read by ``curate filter``) holds no
pickle, only numbers and JSON:

* ``classifier.safetensors``: ``mean`` and ``scale`` (the standardiser, ``(D,)``), ``coef``
  (``(D,)``) and ``intercept`` (``(1,)``), all float64; ``cv_scores`` (``(N,)`` float64, each
  labelled example's cross-validated score) and ``cv_labels`` (``(N,)`` int8, 1 = remove), from
  which ``--target-recall`` picks a threshold.
* ``classifier.json`` (schema :data:`SCHEMA`): the LM it reads (name and digest), the feature
  rule (:class:`~lmassay.curate.features.FeatureSpec`), the default threshold and how it was
  chosen, the cross-validated metrics, the labelled data's digest, the digest of
  ``classifier.safetensors`` (checked on load) and provenance.
* ``report.json`` and ``report.html``: the cross-validation report (:mod:`lmassay.curate.report`).

A score is ``sigmoid(coef · (x - mean) / scale + intercept)``, the probability of ``remove``;
an item is removed when its score is at least the threshold.  The folder can be sealed with
``lmassay seal CLASSIFIER`` (its ``model.sig`` is ignored here).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmassay._atomic import atomic_write_bytes, atomic_write_json
from lmassay.curate.features import POOLINGS, FeatureSpec, features
from lmassay.digests import SIGNATURE_FILES, Digest, digest_file
from lmassay.errors import InputError

if TYPE_CHECKING:
    from lmassay.attest.model_loading import LoadedModel

SCHEMA = "lmassay.curate-classifier/v1"
CLASSIFIER_JSON = "classifier.json"
CLASSIFIER_TENSORS = "classifier.safetensors"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
CLASSIFIER_FILES = (
    CLASSIFIER_JSON,
    CLASSIFIER_TENSORS,
    REPORT_JSON,
    REPORT_HTML,
    *SIGNATURE_FILES,
)
"""What a classifier folder may hold (a seal's signatures included)."""
_FORMAT_FIX = "pass a folder written by `lmassay curate train` (pickled classifiers are never read)"


@dataclass(frozen=True)
class LinearModel:
    """Standardiser and logistic regression as plain arrays (float64)."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    coef: np.ndarray  # (D,)
    intercept: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Probability of ``remove`` for each row of ``features`` ``(N, D)``: ``(N,)``."""
        z = ((features.astype(np.float64) - self.mean) / self.scale) @ self.coef  # (N,)
        return 1.0 / (1.0 + np.exp(-(z + self.intercept)))  # (N,)


def fit_linear(features: np.ndarray, labels: np.ndarray, *, c: float, seed: int) -> LinearModel:
    """Standardise ``features`` ``(N, D)`` and fit an L2 logistic regression (``C = c``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features.astype(np.float64))
    regression = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    regression.fit(scaler.transform(features.astype(np.float64)), labels)
    return LinearModel(
        mean=np.asarray(scaler.mean_, dtype=np.float64),
        scale=np.asarray(scaler.scale_, dtype=np.float64),
        coef=np.asarray(regression.coef_[0], dtype=np.float64),
        intercept=float(regression.intercept_[0]),
    )


@dataclass(frozen=True)
class Classifier:
    """A trained classifier: the linear model, its feature rule, LM and cross-validated scores."""

    linear: LinearModel
    spec: FeatureSpec
    threshold: float
    cv_scores: np.ndarray  # (N,) float64
    cv_labels: np.ndarray  # (N,) int8
    card: dict[str, Any] = field(default_factory=dict)
    """The rest of ``classifier.json`` (model, data, metrics, provenance), as written."""
    folder: Path | None = None
    """The folder it was read from (None before it is saved)."""

    @property
    def model_digest(self) -> Digest:
        recorded = self.card["model"]["digest"]
        return Digest(recorded["algorithm"], recorded["value"])

    @property
    def model_name(self) -> str:
        return str(self.card["model"]["name"])

    def check_model(self, loaded: LoadedModel, flag: str = "--model") -> None:
        """Refuse (:class:`InputError`) an LM other than the one this classifier was trained
        on: its features would mean something else."""
        if loaded.digest.value != self.model_digest.value:
            where = f" ({self.folder})" if self.folder is not None else ""
            raise InputError(
                f"the classifier{where} was trained on the features of the LM with digest "
                f"{self.model_digest.value[:16]}…, not on {flag} {loaded.name} "
                f"({loaded.digest.value[:16]}…)",
                f"pass the LM it was trained with as {flag}, or train a classifier on this one "
                "(lmassay curate train)",
            )

    def score(
        self, loaded: LoadedModel, texts: Sequence[str], *, token_budget: int = 4096
    ) -> np.ndarray:
        """Probability of ``remove`` of each text ``(N,)``, from ``loaded``'s features (checked
        to be the LM the classifier was trained on)."""
        self.check_model(loaded)
        return self.linear.scores(features(loaded, texts, self.spec, token_budget=token_budget))

    def save(self, folder: Path) -> None:
        """Write ``classifier.safetensors`` and ``classifier.json`` into ``folder``."""
        from safetensors.numpy import save

        tensors = {
            "mean": self.linear.mean,
            "scale": self.linear.scale,
            "coef": self.linear.coef,
            "intercept": np.asarray([self.linear.intercept], dtype=np.float64),
            "cv_scores": self.cv_scores.astype(np.float64),
            "cv_labels": self.cv_labels.astype(np.int8),
        }
        atomic_write_bytes(folder / CLASSIFIER_TENSORS, save(tensors, metadata={"schema": SCHEMA}))
        card = {
            **self.card,
            "schema": SCHEMA,
            "features": self.spec.to_json(),
            "threshold": self.threshold,
            "tensors": {
                "file": CLASSIFIER_TENSORS,
                **digest_file(folder / CLASSIFIER_TENSORS).to_json(),
            },
        }
        atomic_write_json(folder / CLASSIFIER_JSON, card)


def load_classifier(path: str | os.PathLike[str], flag: str = "--classifier") -> Classifier:
    """Read a classifier folder (or its ``classifier.json``); :class:`InputError` naming ``flag``
    for anything else — a pickle, a damaged or changed file, another schema."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    given = Path(path)
    folder = given.parent if given.name == CLASSIFIER_JSON else given
    if not given.exists():
        raise InputError(f"{flag} {given} does not exist", _FORMAT_FIX)
    if not folder.is_dir():
        raise InputError(f"{flag} {given} is a file, not a classifier folder", _FORMAT_FIX)
    card_path, tensors_path = folder / CLASSIFIER_JSON, folder / CLASSIFIER_TENSORS
    if not card_path.is_file() or not tensors_path.is_file():
        raise InputError(
            f"{flag} {folder} has no {CLASSIFIER_JSON} and {CLASSIFIER_TENSORS}", _FORMAT_FIX
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        if card.get("schema") != SCHEMA:
            raise ValueError(f"schema {card.get('schema')!r}, not {SCHEMA!r}")
        recorded = card["tensors"]["value"]
        spec = FeatureSpec(
            layer=int(card["features"]["layer"]),
            pooling=card["features"]["pooling"],
            max_tokens=int(card["features"]["max_tokens"]),
        )
        if spec.pooling not in POOLINGS:
            raise ValueError(f"pooling {spec.pooling!r}")
        threshold = float(card["threshold"])
        Digest(card["model"]["digest"]["algorithm"], card["model"]["digest"]["value"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{flag} {card_path} cannot be read ({exc})", _FORMAT_FIX) from exc
    if digest_file(tensors_path).value != recorded:
        raise InputError(
            f"{flag} {tensors_path} is not the file {CLASSIFIER_JSON} records (its digest differs)",
            "train the classifier again, or restore the folder from its seal",
        )
    try:
        tensors = load_file(tensors_path)
        linear = LinearModel(
            mean=tensors["mean"], scale=tensors["scale"], coef=tensors["coef"],
            intercept=float(tensors["intercept"][0]),
        )  # fmt: skip
        cv_scores, cv_labels = tensors["cv_scores"], tensors["cv_labels"]
    except (SafetensorError, KeyError, IndexError) as exc:
        raise InputError(f"{flag} {tensors_path} cannot be read ({exc})", _FORMAT_FIX) from exc
    return Classifier(linear, spec, threshold, cv_scores, cv_labels, card, folder)
