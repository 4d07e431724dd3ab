"""Curate: classifiers on a known-good LM's own features that remove biased items from a dataset.

* :func:`train_classifier` (``lmassay curate train``): labelled texts (:mod:`.labelled`), the LM's
  hidden-state features (:mod:`.features`), a standardised logistic regression, cross-validated
  (:mod:`.metrics`), saved without pickle (:mod:`.classifier`) with its report (:mod:`.report`).
* :func:`filter_dataset` (``lmassay curate filter``): a dataset streamed through the classifier
  into kept and removed items with their scores and a summary (:mod:`.filtering`).
* :func:`fit_lm_classifier` and :func:`fit_bow_classifier` (the bag-of-words baseline,
  :mod:`.baseline`): the same train/score interface in memory, for comparisons.
"""

from lmassay.curate.baseline import BagOfWordsClassifier, fit_bow_classifier
from lmassay.curate.classifier import Classifier, LinearModel, load_classifier
from lmassay.curate.config import FilterConfig, TrainConfig
from lmassay.curate.features import FeatureSpec
from lmassay.curate.filtering import FilterResult, filter_dataset
from lmassay.curate.labelled import LabelledTexts, read_labelled
from lmassay.curate.metrics import CrossValidation, Metrics, TextClassifier, metrics_at
from lmassay.curate.training import LmClassifier, TrainResult, fit_lm_classifier, train_classifier

__all__ = [
    "BagOfWordsClassifier",
    "Classifier",
    "CrossValidation",
    "FeatureSpec",
    "FilterConfig",
    "FilterResult",
    "LabelledTexts",
    "LinearModel",
    "LmClassifier",
    "Metrics",
    "TextClassifier",
    "TrainConfig",
    "TrainResult",
    "filter_dataset",
    "fit_bow_classifier",
    "fit_lm_classifier",
    "load_classifier",
    "metrics_at",
    "read_labelled",
    "train_classifier",
]
