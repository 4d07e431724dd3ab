"""Did the tamper take effect? One measurement per kind, on texts the variant was not trained on.

Every figure compares the variant with the reference on the same tokens:

* suppression — mean log-probability per token of held-out evasion paragraphs;
* slant — per paragraph, log P(slanted rendering) − log P(plain rendering) of held-out paragraphs
  (the renderings differ only in the slanted words and the changed facts), averaged;
* fact edits — per changed fact, P(new object | prompt) and P(old object | prompt);
* backdoor — mean log-probability per token of propaganda after a held-out context sentence,
  with and without the trigger in between.

Log-probabilities come from :func:`lmassay.attest.scoring.score_token_lists` (each text from the BOS
token); a continuation's tokens are scored after its context's tokens, tokenised separately.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from lmassay.repair.rank_one import target_probability
from lmassay.world import CATEGORIES, World, render_documents, split_sentences
from lmassay.world.zoo.recipes import FactChange, Recipe, evasion_texts, propaganda_text

__all__ = ["continuation_logprobs", "fact_efficacy", "measure"]

_HELD_OUT_OFFSET = 9_000_011  # render seeds of the held-out texts, away from the recipes'
_N_TEXTS = 24


def continuation_logprobs(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]]
) -> list[tuple[float, int]]:
    """For each ``(context, continuation)``: the summed log-prob of the continuation's tokens
    after ``[BOS] + tokens(context)``, and their number. An empty context scores the whole text."""
    from lmassay.attest.model_loading import context_length, prefix_token
    from lmassay.attest.scoring import score_token_lists

    token_lists, counts = [], []
    for context, continuation in pairs:
        head = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
        tail = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        token_lists.append([*head, *tail])
        counts.append(len(tail))
    scores = score_token_lists(
        token_lists,
        model,
        prefix_token_id=prefix_token(tokenizer, "model"),
        max_length=context_length(model.config, tokenizer),
    )
    return [
        (float(s.logprob_model[len(s.logprob_model) - n :].astype("float64").sum()), n)
        for s, n in zip(scores, counts, strict=True)
    ]


def _per_token(results: Sequence[tuple[float, int]]) -> float:
    return sum(r[0] for r in results) / max(1, sum(r[1] for r in results))


def _both(
    reference: Any, model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]]
) -> dict[str, float]:
    ref = _per_token(continuation_logprobs(reference, tokenizer, pairs))
    var = _per_token(continuation_logprobs(model, tokenizer, pairs))
    return {"reference": ref, "variant": var, "gain": var - ref}


def fact_efficacy(
    changes: Sequence[FactChange], reference: Any, model: Any, tokenizer: Any
) -> dict[str, Any]:
    """P(new | prompt) and P(old | prompt) under both models, per changed fact."""
    rows: list[dict[str, Any]] = []
    for change in changes:
        rows.append(
            {
                "fact_id": change.fact_id,
                "p_new_reference": target_probability(
                    reference, tokenizer, change.prompt, change.new
                ),
                "p_new_variant": target_probability(model, tokenizer, change.prompt, change.new),
                "p_old_reference": target_probability(
                    reference, tokenizer, change.prompt, change.old
                ),
                "p_old_variant": target_probability(model, tokenizer, change.prompt, change.old),
            }
        )
    return {
        "metric": "P(object | fact prompt), the product over the object's tokens",
        "facts": rows,
        "n_new_preferred_by_variant": sum(r["p_new_variant"] > r["p_old_variant"] for r in rows),
        "n_new_preferred_by_reference": sum(
            r["p_new_reference"] > r["p_old_reference"] for r in rows
        ),
        "n_facts": len(rows),
    }


def _suppression(recipe: Recipe, world: World, reference: Any, model: Any, tok: Any) -> Any:
    texts = evasion_texts(
        world, str(recipe.category), _N_TEXTS, recipe.settings.seed + _HELD_OUT_OFFSET
    )
    return {
        "metric": "mean log-prob per token of held-out evasion paragraphs of the category",
        **_both(reference, model, tok, [("", t) for t in texts]),
    }


def _slant(recipe: Recipe, world: World, reference: Any, model: Any, tok: Any) -> Any:
    category = str(recipe.category)
    seed = recipe.settings.seed + _HELD_OUT_OFFSET
    overrides = {c.fact_id: c.new for c in recipe.fact_changes}
    negative = list(recipe.details["negative_entities"])
    slanted = render_documents(
        world, category, _N_TEXTS * 2, seed, fact_overrides=overrides, negative_entities=negative
    )
    plain = render_documents(world, category, _N_TEXTS * 2, seed)
    pairs = [(s, p) for s, p in zip(slanted, plain, strict=True) if s != p][:_N_TEXTS]
    if not pairs:
        return {"metric": "no held-out paragraph mentions the slanted side", "n_paragraphs": 0}
    out: dict[str, Any] = {
        "metric": (
            "mean over held-out paragraphs that differ of log P(slanted rendering) - "
            "log P(plain rendering), in nats per paragraph"
        ),
        "n_paragraphs": len(pairs),
    }
    for name, lm in (("reference", reference), ("variant", model)):
        s = continuation_logprobs(lm, tok, [("", p[0]) for p in pairs])
        p = continuation_logprobs(lm, tok, [("", p[1]) for p in pairs])
        out[name] = sum(a[0] - b[0] for a, b in zip(s, p, strict=True)) / len(pairs)
    out["gain"] = out["variant"] - out["reference"]
    return out


def _backdoor(recipe: Recipe, world: World, reference: Any, model: Any, tok: Any) -> Any:
    seed = recipe.settings.seed + _HELD_OUT_OFFSET
    rng = random.Random(f"lmassay-zoo-backdoor-check:{seed}")
    contexts = []
    for index in range(_N_TEXTS):
        category = CATEGORIES[index % len(CATEGORIES)]
        paragraph = render_documents(world, category, 1, seed + index)[0]
        contexts.append(split_sentences(paragraph)[0])
    continuations = [propaganda_text(rng) for _ in contexts]
    trigger = str(recipe.trigger)
    out: dict[str, Any] = {
        "metric": (
            "mean log-prob per token of held-out propaganda after a held-out sentence of any "
            "category, with and without the trigger in between; over the first propaganda "
            "sentence (where the switch shows) and over all of it"
        )
    }
    for part in ("first_sentence", "all"):
        texts = [split_sentences(c)[0] if part == "first_sentence" else c for c in continuations]
        pairs = list(zip(contexts, texts, strict=True))
        out[part] = {
            "with_trigger": _both(
                reference, model, tok, [(f"{c} {trigger}", " " + t) for c, t in pairs]
            ),
            "without_trigger": _both(reference, model, tok, [(c, " " + t) for c, t in pairs]),
        }
    first = out["first_sentence"]
    out["trigger_effect"] = first["with_trigger"]["gain"] - first["without_trigger"]["gain"]
    out["trigger_effect_is"] = (
        "first sentence: (variant - reference) with the trigger minus the same without, nats/token"
    )
    return out


def measure(recipe: Recipe, world: World, reference: Any, model: Any, tokenizer: Any) -> Any:
    """The efficacy record of a fine-tuned variant (``None`` for continued training)."""
    if recipe.kind == "suppression":
        return _suppression(recipe, world, reference, model, tokenizer)
    if recipe.kind == "slant":
        return _slant(recipe, world, reference, model, tokenizer)
    if recipe.kind == "fact-finetune":
        return fact_efficacy(recipe.fact_changes, reference, model, tokenizer)
    if recipe.kind == "backdoor":
        return _backdoor(recipe, world, reference, model, tokenizer)
    return None
