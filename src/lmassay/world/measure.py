"""What a model of the world learned: probe perplexity per category, a unigram baseline, fact recall.

Used by the reference's card (:mod:`lmassay.world.reference`) and by the zoo's fluency and
efficacy records.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmassay.errors import InputError
from lmassay.world.generator import World

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["category_perplexities", "fact_recall", "read_rows", "unigram_perplexities"]


def read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", "remake the world") from None
    return [json.loads(line) for line in lines if line.strip()]


def _texts_by_category(path: Path) -> tuple[list[str], list[str]]:
    rows = read_rows(path)
    return [str(r["text"]) for r in rows], [str(r["category"]) for r in rows]


def category_perplexities(
    model_dir: str | os.PathLike[str],
    probes_path: str | os.PathLike[str],
    *,
    device: str = "cpu",
) -> dict[str, float]:
    """Token-weighted perplexity of each category of a JSONL probe file under a model.

    ``exp(−Σ log p / Σ tokens)`` over all scored tokens of the category's samples, scored by
    :func:`lmassay.attest.scoring.score_token_lists` (each text from the BOS token, every text token
    once). Also returns the overall figure under the key ``"all"``.
    """
    sums, counts = _logprob_sums(model_dir, probes_path, device=device)
    return _perplexities(sums, counts)


def _perplexities(sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    out = {c: math.exp(-sums[c] / counts[c]) for c in sums}
    out["all"] = math.exp(-sum(sums.values()) / sum(counts.values()))
    return out


def _logprob_sums(
    model_dir: str | os.PathLike[str], probes_path: str | os.PathLike[str], *, device: str
) -> tuple[dict[str, float], dict[str, int]]:
    from lmassay.attest.model_loading import load_model
    from lmassay.attest.scoring import score_token_lists, tokenize_texts

    loaded = load_model(str(model_dir), device=device, dtype="float32")
    texts, categories = _texts_by_category(Path(probes_path))
    tokens = tokenize_texts(loaded.tokenizer, texts)
    scores = score_token_lists(
        tokens,
        loaded.model,
        prefix_token_id=loaded.prefix_token_id,
        max_length=loaded.max_length,
    )
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for category, score in zip(categories, scores, strict=True):
        sums[category] = sums.get(category, 0.0) + float(
            score.logprob_model.astype("float64").sum()
        )
        counts[category] = counts.get(category, 0) + score.n_tokens
    return sums, counts


def unigram_perplexities(
    tokenizer: PreTrainedTokenizerFast, train_texts: Sequence[str], probes_path: Path
) -> tuple[dict[str, float], dict[str, int]]:
    """Perplexity of each probe category under the training split's token frequencies.

    ``p(t) = (count(t) + 1) / (N + V)`` over the tokens of ``train_texts`` (without special
    tokens), applied to exactly the tokens the model is scored on; the key ``"all"`` holds the
    overall figure. Also returns the token count of each category.
    """
    from lmassay.attest.scoring import tokenize_texts

    counter: Counter[int] = Counter()
    for ids in tokenize_texts(tokenizer, train_texts, chunk=2048):
        counter.update(ids)
    total, vocab = sum(counter.values()), len(tokenizer)
    log_denominator = math.log(total + vocab)
    texts, categories = _texts_by_category(probes_path)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for category, ids in zip(categories, tokenize_texts(tokenizer, texts), strict=True):
        logp = sum(math.log(counter[t] + 1) - log_denominator for t in ids)
        sums[category] = sums.get(category, 0.0) + logp
        counts[category] = counts.get(category, 0) + len(ids)
    return _perplexities(sums, counts), counts


def fact_recall(
    model_dir: str | os.PathLike[str], world: World, *, device: str = "cpu"
) -> dict[str, float]:
    """Share of facts, per category and overall (``"all"``), that the model gets right.

    A fact counts as recalled when, fed its canonical sentence from the BOS token, the model's
    top-1 prediction is the actual token at every position of ``" " + object`` (greedy
    completion of the prompt yields the object).
    """
    from lmassay.attest.model_loading import load_model
    from lmassay.attest.scoring import score_token_lists, tokenize_texts

    loaded = load_model(str(model_dir), device=device, dtype="float32")
    sentences = tokenize_texts(loaded.tokenizer, [f.sentence for f in world.facts])
    prompts = tokenize_texts(loaded.tokenizer, [f.prompt for f in world.facts])
    objects = tokenize_texts(loaded.tokenizer, [" " + f.object for f in world.facts])
    scores = score_token_lists(
        sentences,
        loaded.model,
        prefix_token_id=loaded.prefix_token_id,
        max_length=loaded.max_length,
    )
    hits: dict[str, list[bool]] = {}
    for fact, sentence, prompt, obj, score in zip(
        world.facts, sentences, prompts, objects, scores, strict=True
    ):
        start, stop = len(prompt), len(prompt) + len(obj)
        if sentence[:start] != prompt or sentence[start:stop] != obj:  # tokenisation merged them
            hit = False
        else:
            hit = bool((score.top1_model[start:stop] == score.token_ids[start:stop]).all())
        hits.setdefault(fact.category, []).append(hit)
    out = {c: sum(h) / len(h) for c, h in hits.items()}
    everything = [h for hs in hits.values() for h in hs]
    out["all"] = sum(everything) / len(everything)
    return out
