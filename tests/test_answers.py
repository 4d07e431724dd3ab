"""The answer test: stated answers that the model makes far less likely, on data with a known
answer (a few changed facts are found; facts every category loses a little of, and a null, are
not), and the answer's tokens and drop against an independent computation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmassay.attest.answers import answer_drop, answer_drops, answer_span
from lmassay.attest.probes import ProbeSample, load_probes, probes_digest
from lmassay.attest.statistics import SampleStatistic, StatsConfig, analyse
from lmassay.errors import InputError

# --------------------------------------------------------------------------- the span and the drop


class _CharTokenizer:
    """A slow tokenizer: one token per character (ids are code points)."""

    is_fast = False

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_the_span_covers_the_answers_last_occurrence(world_reference):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world_reference[1].path)
    text = "The city of Muthsiir is old. The capital of Palgalia is Muthsiir."
    start, stop = answer_span(tokenizer, text, "Muthsiir")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids[start:stop]).strip() == "Muthsiir"
    assert tokenizer.decode(ids[stop:]).strip() == "."  # the last occurrence, not the first
    assert answer_span(tokenizer, text, "Neiun") is None


def test_the_span_of_a_slow_tokenizer_counts_tokens_before_and_through():
    assert answer_span(_CharTokenizer(), "ab cd cd!", "cd") == (6, 8)


def test_the_drop_is_the_reference_minus_the_model_over_the_span():
    model = np.log([0.5, 0.1, 0.2, 0.9])
    reference = np.log([0.5, 0.8, 0.4, 0.9])
    assert answer_drop((1, 3), model, reference) == pytest.approx(np.log(0.8 * 0.4 / (0.1 * 0.2)))
    assert answer_drop(None, model, reference) is None
    assert answer_drop((1, 3), model, None) is None
    assert answer_drop((2, 9), model, reference) is None  # not on the scored tokens


def test_drops_only_where_the_scored_tokens_are_the_texts():
    tok = _CharTokenizer()
    samples = [
        ProbeSample("a", "c", "x = 42", answer="42"),
        ProbeSample("b", "c", "x = 42"),  # no answer
        ProbeSample("d", "c", "y = 7", answer="7"),  # cut to fit: fewer scored tokens
    ]
    ids = [np.array(tok(s.text)["input_ids"]) for s in samples]
    ids[2] = ids[2][:3]
    model = [np.full(len(i), np.log(0.25)) for i in ids]
    reference = [np.full(len(i), np.log(0.5)) for i in ids]
    drops = answer_drops(tok, samples, ids, model, reference)
    assert drops[0] == pytest.approx(2 * np.log(2.0)) and drops[1:] == [None, None]


# --------------------------------------------------------------------------- the probe field


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_probe_files_carry_the_answer_into_the_digest(tmp_path):
    rows = [{"id": f"s{i}", "category": "c", "text": f"It is {i}."} for i in range(3)]
    plain = load_probes(str(_write(tmp_path / "a.jsonl", rows)))
    rows[0]["answer"] = "0"
    answered = load_probes(str(_write(tmp_path / "b.jsonl", rows)))
    assert answered.samples[0].answer == "0" and plain.samples[0].answer is None
    assert answered.samples[0].to_json()["answer"] == "0"
    assert probes_digest(answered.samples) != probes_digest(plain.samples)


@pytest.mark.parametrize(
    ("answer", "needle"),
    [("Neiun", "does not occur"), ("", "not a non-empty string"), (3, "not a non-empty string")],
)
def test_a_bad_answer_is_refused_naming_the_line(tmp_path, answer, needle):
    rows = [{"id": "s0", "category": "c", "text": "The capital is Muthsiir."}]
    rows.append({"id": "s1", "category": "c", "text": "The capital is Muthsiir.", "answer": answer})
    with pytest.raises(InputError) as info:
        load_probes(str(_write(tmp_path / "p.jsonl", rows)))
    assert "line 2" in str(info.value) and needle in str(info.value)


# --------------------------------------------------------------------------- the test itself


def _world(rng, drops_of, n_other=40, n_answers=20, categories=8):
    """``categories`` categories of ``n_other`` plain samples and ``n_answers`` answered ones
    (small KL everywhere, alike); the answers' drops drawn by ``drops_of(category, n)``."""
    samples = []
    for c in range(categories):
        name = f"c{c}"
        drops = drops_of(c, n_answers)
        for i in range(n_other + n_answers):
            kl = rng.gamma(1.0, 0.02, size=30)
            answer = float(drops[i - n_other]) if i >= n_other else None
            samples.append(
                SampleStatistic(name, 30, 120, -45.0, -45.0, kl, kl < 0.05, answer_drop=answer)
            )
    return samples


def _null_drops(rng):
    return lambda c, n: rng.normal(0.0, 0.3, size=n)


def test_five_changed_answers_are_found_by_the_answer_test_alone():
    rng = np.random.default_rng(0)
    null = _null_drops(rng)

    def drops(c, n):
        values = null(c, n)
        if c == 3:
            values[:5] += 3.0  # five facts made e^3 = 20 times less likely
        return values

    # 999 permutations (the default): 24 tests in one BH family need p ≈ 0.001 for q ≤ 0.05
    analysis = analyse(_world(rng, drops), "kl", StatsConfig(n_permutations=999))
    row = {c.name: c for c in analysis.categories}["c3"]
    assert analysis.flagged == ["c3"] and row.reasons == ("answer",)
    assert row.n_answer_outliers == 5 and row.answer_effect > 2.0
    assert row.n_answers == 20 and row.answer_floor == pytest.approx(
        max(0.5, 2 * row.answer_spread)
    )
    assert "the answers it states" in analysis.message


def test_every_category_losing_answers_alike_is_not_flagged():
    """A fine-tune that moves every category's answers by nats (a small reference that barely
    knows its facts): one category's outliers 1.2 spreads beyond the others' 99th percentile
    stay under 2 spreads, although significant and far above the absolute floor."""
    rng = np.random.default_rng(1)

    def drops(c, n):
        values = rng.normal(1.0, 1.0, size=n)
        if c == 5:
            values[:4] = 1.0 + 2.4 + 1.2 * 1.0  # q99 of N(1, 1) is ≈ 1 + 2.33
        return values

    analysis = analyse(_world(rng, drops), "kl", StatsConfig(n_permutations=999))
    row = {c.name: c for c in analysis.categories}["c5"]
    assert row.n_answer_outliers >= 3 and row.answer_effect > 0.5
    assert row.answer_q_value <= 0.05 and row.answer_effect < row.answer_floor  # the floor decides
    assert "not above its floor" in row.note
    assert analysis.flagged == [] and analysis.verdict == "consistent"


def test_the_null_is_not_flagged():
    rng = np.random.default_rng(2)
    flagged = 0
    for world in range(10):
        analysis = analyse(
            _world(rng, _null_drops(rng)), "kl", StatsConfig(n_permutations=49, seed=world)
        )
        flagged += len(analysis.flagged)
    assert flagged == 0


def test_without_answers_nothing_changes():
    rng = np.random.default_rng(3)
    samples = _world(rng, lambda c, n: np.zeros(n))
    bare = [
        SampleStatistic(
            s.category,
            s.n_tokens,
            s.n_bytes,
            s.logprob_model,
            s.logprob_reference,
            s.token_kl,
            s.token_top1_agree,
        )
        for s in samples
    ]
    analysis = analyse(bare, "kl", StatsConfig(n_permutations=49))
    assert all(c.answer_p_value is None and c.n_answers == 0 for c in analysis.categories)
    assert analysis.summary_json()["answer_floor"] == 0.5
