"""``lmassay.attest(model=..., reference=..., probes=...)``: an attestation from a notebook.

The same run as ``lmassay attest`` (:func:`lmassay.attest.recipe.attest`), taking what a notebook
holds:

* ``model`` / ``reference``: a local folder or hub id (``revision=`` / ``reference_revision=``
  pin hub revisions), a loaded ``PreTrainedModel`` with ``tokenizer=`` (``reference_tokenizer=``),
  or a ``(model, tokenizer)`` pair. A model object is scored where it is (its device and dtype),
  in eval mode for the run (its training mode is restored after), and is recorded without a
  folder or folder digest (none was hashed): ``tensors_digest`` names it instead (see
  :func:`~lmassay.attest.model_loading.state_dict_digest`).
* ``probes``: anything ``--probes`` takes (a path, ``hf:ORG/NAME``, ``builtin:NAME``, a suite
  file; None: the shipped offline suite), a ``datasets.Dataset`` or an iterable of dicts
  (``{"text": ..., "category": ...}``; ``text_field=`` / ``category_field=`` rename them).
* ``out``: a folder to write ``attestation.json``, ``samples.jsonl`` and the reports to, as the
  CLI does (replaced whole, through :class:`~lmassay.output_folder.OutputFolder`); None (the
  default): nothing is written and the result's ``paths`` are empty.
* Any other :class:`~lmassay.attest.config.AttestConfig` field as a keyword (``n_bootstrap=``,
  ``alpha=``, ``device=``, ``comparison=``, ...).

Returns the :class:`~lmassay.attest.recipe.AttestationResult`: ``result.document`` is the typed
:class:`~lmassay.attest.document.Attestation` (``verdict``, ``flagged``, ``categories``, ...),
``result.samples`` the per-sample rows of ``samples.jsonl``. Bad input raises
:class:`~lmassay.errors.LmassayError` (what, and the fix), as the CLI reports it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lmassay.errors import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lmassay.attest.model_loading import LoadedModel
    from lmassay.attest.probes import ProbeSet
    from lmassay.attest.recipe import AttestationResult
    from lmassay.progress import Progress

__all__ = ["attest_objects"]

_OWN = frozenset({"model", "reference", "probes", "out"})


def attest_objects(
    model: Any,
    reference: Any = None,
    probes: Any = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    reference_tokenizer: PreTrainedTokenizerBase | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    **settings: Any,
) -> AttestationResult:
    """Attest ``model`` against ``reference`` on ``probes``; see the module docstring.

    Example (the test-size world of ``lmassay demo --size test``)::

        import lmassay
        result = lmassay.attest(model="zoo/suppression", reference="reference",
                                probes="world/probes.jsonl")
        result.document.verdict, result.document.flagged
    """
    from lmassay.attest.config import AttestConfig
    from lmassay.attest.recipe import GivenModels, attest

    config_fields = {f.name for f in dataclasses.fields(AttestConfig) if f.init}
    unknown = sorted(set(settings) - config_fields) + sorted(set(settings) & _OWN)
    if unknown:
        raise InputError(
            f"lmassay.attest() got unknown settings {unknown}",
            f"use the AttestConfig fields: {', '.join(sorted(config_fields - _OWN))}",
        )
    given_model = _as_object(model, tokenizer, "model", "tokenizer")
    given_reference = _as_object(reference, reference_tokenizer, "reference", "reference_tokenizer")
    probe_set = _probe_rows(probes, settings)
    config = AttestConfig(
        model=_name(model, given_model),
        probes=probe_set.path if probe_set is not None else _spec(probes),
        out=None if out is None else os.fspath(out),
        reference=None if reference is None else _name(reference, given_reference),
        **settings,
    )
    if (given_model or given_reference) and config.offload != "none":
        raise InputError(
            "offload='stream' reads a model's safetensors files; a model object has none",
            "pass the model's folder or hub id, or drop offload",
        )
    with _scoring_mode(given_model, given_reference):
        loaded = GivenModels(
            model=_describe(given_model, config.model),
            reference=_describe(given_reference, config.reference or ""),
        )
        return attest(config, progress, probes=probe_set, models=loaded)


def _as_object(
    value: Any, tokenizer: Any, what: str, tokenizer_flag: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase] | None:
    """``(model, tokenizer)`` when ``value`` is a model object (or such a pair), None for a
    path, hub id or None."""
    if value is None or isinstance(value, str | os.PathLike):
        if tokenizer is not None:
            raise InputError(
                f"{tokenizer_flag}= was given with {what}={value!r}, which is not a model object",
                f"drop {tokenizer_flag}= (a folder or hub id brings its own tokenizer)",
            )
        return None
    if isinstance(value, tuple):
        if len(value) != 2 or tokenizer is not None:
            raise InputError(
                f"{what}= is a tuple of {len(value)} items"
                + (f" and {tokenizer_flag}= was given too" if tokenizer is not None else ""),
                f"pass {what}=(model, tokenizer), or {what}=model with {tokenizer_flag}=",
            )
        value, tokenizer = value
    from transformers import PreTrainedModel

    if not isinstance(value, PreTrainedModel):
        raise InputError(
            f"{what}= is a {type(value).__name__}",
            "pass a folder, a hub id, a transformers PreTrainedModel or (model, tokenizer)",
        )
    if tokenizer is None or not callable(getattr(tokenizer, "get_vocab", None)):
        raise InputError(
            f"{what}= is a model object without its tokenizer",
            f"pass {what}=(model, tokenizer) or {tokenizer_flag}=tokenizer",
        )
    return value, tokenizer


def _name(value: Any, given: tuple[PreTrainedModel, Any] | None) -> str:
    """What the attestation calls the model: its path or id, or for an object the name it was
    loaded under (``name_or_path``) marked as in memory."""
    if given is None:
        return os.fspath(value)
    origin = str(getattr(given[0], "name_or_path", "") or type(given[0]).__name__)
    return f"{origin} (in memory)"


def _spec(value: Any) -> str | None:
    return None if value is None else os.fspath(value)


def _probe_rows(probes: Any, settings: Mapping[str, Any]) -> ProbeSet | None:
    """The corpus of ``probes`` given as rows (a ``datasets.Dataset`` or an iterable of dicts);
    None for a path or spec (read by the recipe as ``--probes`` is) or None."""
    if probes is None or isinstance(probes, str | os.PathLike):
        return None
    from lmassay.attest.probes import probes_from_rows

    if isinstance(probes, Mapping):  # a datasets.DatasetDict, or one dict
        raise InputError(
            f"probes= is a mapping with keys {sorted(map(str, probes))[:5]}",
            "pass one split (probes=dataset['test']) or a list of rows",
        )
    if not isinstance(probes, Iterable):
        raise InputError(
            f"probes= is a {type(probes).__name__}",
            "pass a path or spec, a datasets.Dataset or an iterable of dicts",
        )
    label = (
        f"datasets.Dataset ({len(probes)} rows)"  # type: ignore[arg-type]
        if type(probes).__name__ == "Dataset" and hasattr(probes, "column_names")
        else "(rows in memory)"
    )
    keys = ("text_field", "category_field", "id_field", "per_category", "seed")
    return probes_from_rows(
        probes,
        label=label,
        min_per_category=settings.get("min_samples", 5),
        **{k: settings[k] for k in keys if k in settings},
    )


def _describe(given: tuple[PreTrainedModel, Any] | None, name: str) -> LoadedModel | None:
    from lmassay.attest.model_loading import in_memory_model

    return None if given is None else in_memory_model(given[0], given[1], name)


@contextmanager
def _scoring_mode(*given: tuple[PreTrainedModel, Any] | None) -> Iterator[None]:
    """The model objects in eval mode for the run, their training mode restored after."""
    objects = [pair[0] for pair in given if pair is not None]
    training = [m.training for m in objects]
    try:
        yield
    finally:
        for model, was_training in zip(objects, training, strict=True):
            model.train(was_training)
