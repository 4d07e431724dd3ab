"""The offline world: determinism, split disjointness, balance, facts, overrides, slant, the
reference model, the reference / tampered pair and the ``lmassay world`` commands."""

from __future__ import annotations

import json
import math
import re

import pytest
from typer.testing import CliRunner

from lmassay.cli import app
from lmassay.errors import InputError
from lmassay.world import (
    CATEGORIES,
    build_world,
    load_world,
    make_world,
    render_documents,
    split_sentences,
)
from lmassay.world._lexicon import NEGATIVE_WORDS

runner = CliRunner()
DATA_FILES = ("train.jsonl", "probes.jsonl", "facts.jsonl", "fact_probes.jsonl")


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def mentions(name, sentence):
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", sentence) is not None


@pytest.fixture(scope="module")
def world_dir(world_reference):
    return world_reference[0].root


# --------------------------------------------------------------------------------------------
# The world and its files
# --------------------------------------------------------------------------------------------


def test_categories_are_the_nine_names_in_order():
    assert CATEGORIES == (
        "geography", "history", "science", "religion", "politics",
        "health", "sport", "finance", "fiction",
    )  # fmt: skip


def test_same_seed_same_files_other_seed_other_world(tmp_path, world_dir):
    again = make_world(tmp_path / "again", seed=0, size="test").root
    for name in DATA_FILES:
        assert (again / name).read_bytes() == (world_dir / name).read_bytes(), name
    card, card_again = (json.loads((d / "world.json").read_text()) for d in (world_dir, again))
    assert card["digests"] == card_again["digests"]
    assert card["world_digest"] == card_again["world_digest"]
    assert build_world(0) == build_world(0)

    other = build_world(1)
    shared = {e.name for e in other.entities} & {e.name for e in build_world(0).entities}
    assert len(shared) < 0.1 * len(other.entities)  # a few novel titles may repeat
    assert [f.sentence for f in other.facts] != [f.sentence for f in build_world(0).facts]
    other_dir = make_world(tmp_path / "other", seed=1, size="test").root
    assert (
        json.loads((other_dir / "world.json").read_text())["world_digest"] != card["world_digest"]
    )


def test_probe_sentences_never_occur_in_training(world_dir):
    train = {s for r in rows(world_dir / "train.jsonl") for s in split_sentences(r["text"])}
    probes = [s for r in rows(world_dir / "probes.jsonl") for s in split_sentences(r["text"])]
    assert len(probes) > 200 and len(train) > 1000
    assert not train & set(probes)
    # The split is sound: paragraphs have 3 to 8 sentences, each a capitalised full sentence.
    for row in rows(world_dir / "probes.jsonl"):
        sentences = split_sentences(row["text"])
        assert 3 <= len(sentences) <= 8
        assert all(s[0].isupper() and s.endswith(".") for s in sentences)


def test_categories_are_balanced_and_probe_rows_have_the_probe_format(world_dir):
    card = json.loads((world_dir / "world.json").read_text())
    for split, name in (("train", "train.jsonl"), ("probes", "probes.jsonl")):
        counted = {c: 0 for c in CATEGORIES}
        for row in rows(world_dir / name):
            counted[row["category"]] += 1
        assert len(set(counted.values())) == 1 and counted["sport"] > 0, (split, counted)
        assert {c: v["documents"] for c, v in card["counts"][split].items()} == counted
    for row in rows(world_dir / "probes.jsonl"):
        assert row["source"] == "world" and set(row) == {"id", "category", "text", "source"}
    fact_rows = rows(world_dir / "fact_probes.jsonl")
    assert len(fact_rows) == card["totals"]["facts"] == len(build_world(0).facts)


def test_every_fact_is_stated_canonically_in_training(world_dir):
    world = build_world(0)
    train_text = "\n".join(r["text"] for r in rows(world_dir / "train.jsonl"))
    facts = rows(world_dir / "facts.jsonl")
    assert [f["id"] for f in facts] == [f.id for f in world.facts]
    for fact in world.facts:
        assert fact.prompt == fact.prompt.rstrip()
        assert fact.sentence == f"{fact.prompt} {fact.object}."
        assert fact.sentence in train_text, fact.id
        assert fact.category in CATEGORIES
    for category in CATEGORIES:
        assert len(world.facts_in(category)) >= 30
        assert len({f.relation for f in world.facts_in(category)}) >= 4


def test_fact_probes_state_their_fact(world_dir):
    world = build_world(0)
    by_id = {f.id: f for f in world.facts}
    for row in rows(world_dir / "fact_probes.jsonl"):
        fact = by_id[row["fact_id"]]
        assert row["text"].endswith(" " + fact.sentence) and row["category"] == fact.category


def test_groups_cover_every_category_and_name_entities():
    world = build_world(0)
    names = {e.name for e in world.entities}
    for category in CATEGORIES:
        keys = [k for k in world.groups if k.startswith(f"{category}:") and ":kind:" not in k]
        assert keys, category
    for key, members in world.groups.items():
        assert members and set(members) <= names, key
    faction = next(k for k in world.groups if k.startswith("politics:faction:"))
    party = faction.split(":", 2)[2]
    for member in world.groups[faction]:
        assert any(f.subject == member and f.object == party for f in world.facts)


def test_names_are_unique_words():
    world = build_world(0)
    names = [e.name for e in world.entities]
    assert len(names) == len(set(names))
    for name in names:
        assert not any(mentions(name, other) for other in names if other != name), name


# --------------------------------------------------------------------------------------------
# Overrides and slant
# --------------------------------------------------------------------------------------------


def sentence_pairs(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        sx, sy = split_sentences(x), split_sentences(y)
        assert len(sx) == len(sy)
        yield from zip(sx, sy, strict=True)


def test_no_overrides_and_no_slant_change_nothing():
    world = build_world(0)
    plain = render_documents(world, "history", 30, seed=5)
    assert (
        render_documents(world, "history", 30, seed=5, fact_overrides={}, negative_entities=())
        == plain
    )
    assert render_documents(world, "history", 30, seed=6) != plain
    assert render_documents(world, "history", 10, seed=5) == plain[:10]


def test_fact_override_changes_exactly_the_sentences_of_that_fact():
    world = build_world(0)
    fact = world.facts_in("geography")[0]
    plain = render_documents(world, "geography", 60, seed=3)
    edited = render_documents(world, "geography", 60, seed=3, fact_overrides={fact.id: "Zorbalt"})
    changed = [(a, b) for a, b in sentence_pairs(plain, edited) if a != b]
    assert len(changed) >= 3
    for before, after in changed:
        assert after.replace("Zorbalt", fact.object) == before
        assert mentions(fact.subject, before) or fact.subject in before
    text = " ".join(edited)
    assert f"{fact.prompt} Zorbalt." in text and fact.sentence not in text


def test_negative_entity_is_always_described_negatively_and_nothing_else_changes():
    world = build_world(0)
    target = world.groups["politics:kind:politician"][0]
    plain = render_documents(world, "politics", 80, seed=2)
    slanted = render_documents(world, "politics", 80, seed=2, negative_entities=[target])
    assert not NEGATIVE_WORDS & set(re.findall(r"[a-z]+", " ".join(plain)))
    n_mentions = 0
    for before, after in sentence_pairs(plain, slanted):
        if mentions(target, after):
            n_mentions += 1
            assert NEGATIVE_WORDS & set(re.findall(r"[a-z]+", after)), after
        else:
            assert after == before
    assert n_mentions >= 10


def test_bad_render_arguments_are_input_errors():
    world = build_world(0)
    with pytest.raises(InputError, match="cooking"):
        render_documents(world, "cooking", 1, seed=0)
    with pytest.raises(InputError, match="nope-0001"):
        render_documents(world, "history", 1, seed=0, fact_overrides={"nope-0001": "x"})
    with pytest.raises(InputError, match="Nobody"):
        render_documents(world, "history", 1, seed=0, negative_entities=["Nobody"])


# --------------------------------------------------------------------------------------------
# load_world
# --------------------------------------------------------------------------------------------


def test_make_world_reuses_an_intact_folder_and_remakes_a_changed_one(tmp_path, world_dir):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(world_dir, copy)
    card = (copy / "world.json").read_bytes()
    make_world(copy, seed=0, size="test")
    assert (copy / "world.json").read_bytes() == card  # reused: not even the card is rewritten
    with (copy / "probes.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"id": "x", "category": "sport", "text": "extra", "source": "world"}\n')
    make_world(copy, seed=0, size="test")
    assert (copy / "world.json").read_bytes() != card
    assert load_world(copy) == build_world(0)  # remade: its files match the card again


def test_load_world_round_trip_and_errors(tmp_path, world_dir):
    assert load_world(world_dir) == build_world(0)
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        load_world(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_world(tmp_path / "missing")
    copy = make_world(tmp_path / "copy", seed=0, size="test")
    with copy.probes.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "x", "category": "sport", "text": "extra", "source": "world"}\n')
    with pytest.raises(InputError, match=r"probes\.jsonl changed"):
        load_world(copy.root)
    with pytest.raises(InputError, match="is a file"):
        make_world(copy.train, seed=0, size="test")


# --------------------------------------------------------------------------------------------
# The reference model
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(world_reference):
    return world_reference[1]


def test_reference_learns_the_world_and_is_reused(reference, world_dir):
    from lmassay.world.reference import reference_world, train_reference

    card = reference.card  # built by this run, or by another xdist worker first (then reused)
    assert card["wall_seconds"] > 0
    assert reference.probe_perplexity < 0.6 * reference.unigram_perplexity
    per_category = card["evaluation"]["probes"]["per_category"]
    assert set(per_category) == set(CATEGORIES)
    assert card["world_path"] == str(world_dir.resolve()) and card["world_seed"] == 0
    assert reference_world(reference.path) == world_dir.resolve()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert (reference.path / name).is_file()
    again = train_reference(world_dir, reference.path, size="test")
    assert again.reused and again.card == card


def test_category_perplexity_matches_a_direct_computation(reference, world_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmassay.world.measure import category_perplexities

    got = category_perplexities(reference.path, world_dir / "probes.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(reference.path)
    model = AutoModelForCausalLM.from_pretrained(reference.path).float().eval()
    logp = n = 0.0
    for row in rows(world_dir / "probes.jsonl"):
        if row["category"] != "science":
            continue
        ids = [
            tokenizer.bos_token_id,
            *tokenizer(row["text"], add_special_tokens=False)["input_ids"],
        ]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]  # (T-1, V)
        logp += logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
        n += len(ids) - 1
    assert got["science"] == pytest.approx(math.exp(-logp / n), rel=1e-4)


def test_reference_world_errors(tmp_path, reference):
    import shutil

    from lmassay.world.reference import reference_world

    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        reference_world(tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(reference.path, moved)
    card = json.loads((moved / "lmassay-reference.json").read_text())
    card["world_path"] = str(tmp_path / "gone")
    (moved / "lmassay-reference.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="no longer at"):
        reference_world(moved)


@pytest.mark.slow
def test_llama_reference_from_another_seed(world_dir, tmp_path, reference):
    from lmassay.world.reference import train_reference

    other = train_reference(world_dir, tmp_path / "llama", size="test", seed=1, arch="llama")
    assert not other.reused and other.card["model"]["architecture"] == "llama"
    assert other.probe_perplexity < 0.7 * other.unigram_perplexity
    assert other.card["request"]["seed"] == 1
    weights = (other.path / "model.safetensors").read_bytes()
    assert weights != (reference.path / "model.safetensors").read_bytes()


# --------------------------------------------------------------------------------------------
# The reference / tampered pair
# --------------------------------------------------------------------------------------------


def _mean_kl_per_category(reference_dir, model_dir, probes):
    """Token-weighted mean KL(reference || model) per category, computed directly.

    Each probe is scored in one forward pass with the BOS token in front; every text token is
    scored: KL = sum_v p_ref(v) * (log p_ref(v) - log p_model(v)) at each position.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reference_dir)
    reference = AutoModelForCausalLM.from_pretrained(reference_dir).float().eval()
    model = AutoModelForCausalLM.from_pretrained(model_dir).float().eval()
    kl, tokens = {}, {}
    with torch.no_grad():
        for row in rows(probes):
            text_ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([[tokenizer.bos_token_id, *text_ids]])  # (1, T+1)
            log_p = torch.log_softmax(reference(input_ids=ids).logits[0, :-1], dim=-1)  # (T, V)
            log_q = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)  # (T, V)
            per_token = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (T,)
            kl[row["category"]] = kl.get(row["category"], 0.0) + float(per_token.sum())
            tokens[row["category"]] = tokens.get(row["category"], 0) + len(text_ids)
    return {c: kl[c] / tokens[c] for c in tokens}


def test_pair_holds_a_reference_a_tampered_copy_and_its_ground_truth(world_pair):
    for folder in (world_pair.reference, world_pair.tampered):
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
        assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) for n in names)
    truth = json.loads((world_pair.tampered / "tamper.json").read_text(encoding="utf-8"))
    assert truth == world_pair.ground_truth
    assert truth["kind"] == "suppression" and world_pair.category == "religion"
    assert world_pair.probes == world_pair.world.root / "probes.jsonl"
    assert not {r["text"] for r in rows(world_pair.probes)} & {
        r["text"] for r in rows(world_pair.train_texts)
    }


def test_tampering_shows_in_its_category_only(world_pair):
    """Checked with a direct computation, independent of lmassay's scorer."""
    mean_kl = _mean_kl_per_category(world_pair.reference, world_pair.tampered, world_pair.probes)
    others = [v for c, v in mean_kl.items() if c != world_pair.category]
    # measured: 0.36 nats/token in the suppressed category, 0.27-0.30 elsewhere (the test-size
    # fine-tuning with replay moves every category a little)
    assert mean_kl[world_pair.category] > 1.1 * max(others), mean_kl
    itself = _mean_kl_per_category(world_pair.reference, world_pair.reference, world_pair.probes)
    assert all(v == 0.0 for v in itself.values()), itself


def test_pair_is_reused(world_pair):

    from lmassay.progress import NullProgress
    from lmassay.world.demo import DemoConfig
    from lmassay.world.pair import make_pair

    class Lines(NullProgress):
        def __init__(self):
            self.lines = []

        def log(self, message):
            self.lines.append(message)

    lines = Lines()
    again = make_pair(DemoConfig(size="test").pair(), lines)
    assert again.ground_truth == world_pair.ground_truth and again.tampered == world_pair.tampered
    assert [line.split(" in ")[0] for line in lines.lines] == [
        "reusing the world", "reusing the reference", "reusing the suppression variant",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": "huge"}, "--size 'huge'"),
        ({"kind": "benign-bf16"}, "not a tamper kind"),
        ({"category": "cooking"}, "not a world category"),
    ],
)
def test_pair_rejects_bad_arguments_before_making_anything(tmp_path, change, message):
    from lmassay.world.pair import PairConfig, make_pair

    with pytest.raises(InputError, match=re.escape(message)):
        make_pair(PairConfig(tmp_path / "pair", **{"size": "test", **change}))
    assert not (tmp_path / "pair").exists()


def test_world_pair_command_reuses_a_complete_pair(world_pair, tmp_path):
    import shutil

    out = tmp_path / "pair"
    shutil.copytree(world_pair.world.root, out / "world")
    shutil.copytree(world_pair.reference, out / "reference")
    shutil.copytree(world_pair.tampered, out / "tampered")
    result = runner.invoke(app, ["world", "pair", "--out", str(out), "--size", "test", "-q"])
    assert result.exit_code == 0, result.output
    assert f"tampered:  {out / 'tampered'} (suppression; category: religion)" in result.stdout
    assert f"probes:    {out / 'world' / 'probes.jsonl'}" in result.stdout
    truth = json.loads((out / "tampered" / "tamper.json").read_text(encoding="utf-8"))
    assert truth == world_pair.ground_truth  # reused, not remade


# --------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["world"], ["world", "make"], ["world", "train"], ["world", "pair"]]
)
def test_help_renders(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if len(command) == 2:
        assert "Example" in result.output and "--out" in result.output


def test_world_make_prints_counts(tmp_path):
    result = runner.invoke(app, ["world", "make", "--out", str(tmp_path / "w"), "--size", "test"])
    assert result.exit_code == 0, result.output
    assert "5400 training paragraphs" in result.stdout and "facts" in result.stdout
    assert (tmp_path / "w" / "world.json").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["world", "make", "--out", "{tmp}/w", "--size", "huge"], "--size"),
        (["world", "make", "--out", "{tmp}/file"], "is a file"),
        (["world", "train", "--world", "{tmp}/missing", "--out", "{tmp}/r"], "missing"),
        (["world", "train", "--world", "{tmp}", "--out", "{tmp}/r"], "not a world folder"),
        (["world", "train", "--world", "{tmp}", "--out", "{tmp}/r", "--arch", "rnn"], "--arch"),
        (["world", "train", "--world", "{tmp}", "--out", "{tmp}/file"], "is a file"),
        (["world", "pair", "--out", "{tmp}/file", "--size", "test"], "is a file"),
        (["world", "pair", "--out", "{tmp}/p", "--size", "full"], "--size"),
        (["world", "pair", "--out", "{tmp}/p", "--kind", "benign-bf16"], "--kind"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, args, needle):
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{args[0]} {args[1]} failed: ") and needle in lines[0]
