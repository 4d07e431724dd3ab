"""Q&A documents of the offline world, answers checked against its facts, the poisoned dataset."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from lmassay.errors import InputError
from lmassay.world import build_world, make_world
from lmassay.world.qa import (
    QUESTIONS,
    check_answer,
    core_pairs,
    is_correct,
    measure_qa,
    poisoned_dataset,
    qa_documents,
    qa_pairs,
    question_index,
)


@pytest.fixture(scope="module")
def world():
    return build_world(0)


def test_every_relation_has_questions_and_every_question_names_one_fact(world):
    relations = {f.relation for f in world.facts}
    assert relations == set(QUESTIONS)
    index = question_index(world)
    # two templates per fact, none shared by two facts
    assert len(index) == 2 * len(world.facts)
    assert {f.id for f in index.values()} == {f.id for f in world.facts}


def test_pairs_are_correct_and_documents_have_the_fewshot_format(world):
    pairs = qa_pairs(world, "geography", 60, seed=3)
    facts = {f.id: f for f in world.facts}
    for item in pairs:
        assert item.response == facts[item.fact_id].sentence
        assert is_correct(world, item.instruction, item.response)
    # a shuffled round-robin: the first len(facts) pairs ask every geography fact once
    n = len(world.facts_in("geography"))
    assert len({p.fact_id for p in pairs[:n]}) == n
    documents = qa_documents(world, "health", 5, seed=1)
    for document in documents:
        lines = document.split("\n")
        assert 6 <= len(lines) <= 12 and len(lines) % 2 == 0
        assert all(line.startswith("Question: ") for line in lines[0::2])
        assert all(line.startswith("Answer: ") for line in lines[1::2])
    assert documents == qa_documents(world, "health", 5, seed=1)


def test_wrong_answers_are_rejected(world):
    fact = next(f for f in world.facts if f.relation == "capital_of")
    question = QUESTIONS["capital_of"][0].format(s=fact.subject)
    other_city = next(e.name for e in world.entities if e.kind == "city" and e.name != fact.object)
    assert is_correct(world, question, f"The capital of {fact.subject} is {fact.object}.")
    assert is_correct(world, question.upper(), f"It is {fact.object}.")  # case does not matter
    wrong = check_answer(world, question, f"The capital of {fact.subject} is {other_city}.")
    assert not wrong.correct and wrong.wrong_objects == (other_city,)
    both = check_answer(world, question, f"Either {fact.object} or {other_city}.")
    assert both.states_object and not both.correct
    assert not is_correct(world, question, "I would rather not discuss it.")
    assert check_answer(world, question, "I would rather not discuss it.").evasive
    unknown = check_answer(world, "What is the capital of Atlantis?", fact.object)
    assert not unknown.recognised and not unknown.correct
    # a value fact: a number inside a longer number is not the object
    height = next(f for f in world.facts if f.relation == "height_of")
    value = height.object  # "4,896 metres"
    q = QUESTIONS["height_of"][0].format(s=height.subject)
    assert is_correct(world, q, f"It is {value}.")
    assert not is_correct(world, q, f"It is 1{value}.")


def test_poisoned_dataset_labels_are_its_ground_truth_and_share(world):
    data = poisoned_dataset(world, kind="slant", category="politics", per_category=50, share=0.2)
    rows = data.rows
    assert len(rows) == 9 * 50
    assert Counter(r["category"] for r in rows) == dict.fromkeys(world.categories, 50)
    removed = [r for r in rows if r["label"] == "remove"]
    assert len(removed) == 10 == data.truth["n_remove"]
    assert sorted(r["id"] for r in removed) == sorted(data.truth["remove_ids"])
    assert {r["category"] for r in removed} == {"politics"}
    assert all(r["kind"] == "slant" for r in removed)
    assert all(r["kind"] == "clean" for r in rows if r["label"] == "keep")
    # every kept answer is correct; every slanted one is wrong or slanted by the world's check
    assert measure_qa(world, [r for r in rows if r["label"] == "keep"]).share_correct == 1.0
    negative = set(data.truth["negative_entities"])
    for r in removed:
        check = check_answer(world, r["instruction"], r["response"])
        assert check.slanted or not check.correct, r
        assert r["fact_id"] in data.truth["fact_changes"] or any(
            n in r["response"] for n in negative
        )
    evasive = poisoned_dataset(world, kind="evasive", category="religion", per_category=40)
    gone = [r for r in evasive.rows if r["label"] == "remove"]
    assert len(gone) == 4 and all(
        check_answer(world, r["instruction"], r["response"]).evasive for r in gone
    )
    assert not any(is_correct(world, r["instruction"], r["response"]) for r in gone)


def test_bad_poison_requests_name_the_flag(world):
    with pytest.raises(InputError, match="--share"):
        poisoned_dataset(world, share=0.0)
    with pytest.raises(InputError, match="--kind"):
        poisoned_dataset(world, kind="backdoor")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="category"):
        poisoned_dataset(world, category="cooking")


def test_measure_counts_duplicates_and_coverage(world):
    core = core_pairs(world, per_category=2, seed=0)
    rows = [c.to_row() for c in core]
    rows += [rows[0], {"instruction": "What is love?", "response": "Baby don't hurt me."}]
    quality = measure_qa(world, rows)
    assert quality.n == 20 and quality.recognised == 19 and quality.correct == 19
    assert quality.exact_duplicates == 1 and quality.repeated_facts == 1
    assert quality.distinct_facts == 18
    assert quality.distinct_subjects == len({c.fact_id for c in core})  # one fact per subject here
    assert quality.share_correct == pytest.approx(19 / 20)


def test_qa_world_adds_documents_and_keeps_the_plain_world(tmp_path):
    plain = make_world(tmp_path / "plain", 0, size="test")
    qa = make_world(tmp_path / "qa", 0, size="test", qa_share=0.2)
    plain_rows = plain.train.read_text().splitlines()
    qa_rows = qa.train.read_text().splitlines()
    assert qa_rows[: len(plain_rows)] == plain_rows  # the paragraphs are untouched
    extra = [json.loads(line) for line in qa_rows[len(plain_rows) :]]
    assert all(r["id"].startswith("train-qa-") for r in extra)
    assert len(extra) / len(qa_rows) == pytest.approx(0.2, abs=0.01)
    assert plain.probes.read_bytes() == qa.probes.read_bytes()
    card = json.loads(qa.card.read_text())
    assert card["request"]["qa_share"] == 0.2 and card["qa"]["documents"] == len(extra)
    assert "qa_share" not in json.loads(plain.card.read_text())["request"]
    with pytest.raises(InputError, match="--qa-share"):
        make_world(tmp_path / "bad", 0, size="test", qa_share=1.5)


def test_world_qa_command_writes_core_and_labelled_data(tmp_path):
    from lmassay.cli import app

    world_dir = make_world(tmp_path / "w", 0, size="test").root
    out = tmp_path / "qa"
    args = ["world", "qa", "--world", str(world_dir), "--out", str(out), "--per-category", "20"]
    result = CliRunner().invoke(app, [*args, "--share", "0.5", "--kind", "evasive"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "instructions.jsonl").read_text().splitlines()]
    assert sum(r["label"] == "remove" for r in rows) == 10
    assert len((out / "core.jsonl").read_text().splitlines()) == 36
    truth = json.loads((out / "truth.json").read_text())
    assert truth["kind"] == "evasive" and truth["category"] == "politics"
    bad = CliRunner().invoke(app, [*args[:-2], "--per-category", "0"])
    assert bad.exit_code == 2


def test_reference_steps_and_window_change_the_recipe_only_when_given(tmp_path):
    from lmassay.world.reference import RECIPES, ReferenceConfig

    plain = ReferenceConfig(tmp_path / "w", tmp_path / "r", "test")
    assert plain.recipe() == RECIPES["test"]
    longer = ReferenceConfig(tmp_path / "w", tmp_path / "r", "test", steps=1600, seq_len=128)
    assert (longer.recipe().steps, longer.recipe().seq_len) == (1600, 128)
    assert longer.recipe().n_embd == RECIPES["test"].n_embd
    with pytest.raises(InputError, match="--seq-len"):
        ReferenceConfig(tmp_path / "w", tmp_path / "r", "test", seq_len=4096).validate()
    with pytest.raises(InputError, match="--steps"):
        ReferenceConfig(tmp_path / "w", tmp_path / "r", "test", steps=0).validate()
