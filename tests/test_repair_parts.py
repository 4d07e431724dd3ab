"""The parts of ``lmassay repair``: overlap check, data roles, losses, checkpoints, outcome rule."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from lmassay.attest.document import Attestation
from lmassay.attest.probes import ProbeSample
from lmassay.errors import InputError
from lmassay.repair import RepairConfig, compare_attestations, find_probe_overlap
from lmassay.repair.checkpoint import (
    TrainingState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from lmassay.repair.data import MONITOR_PER_CATEGORY, split_repair_texts
from lmassay.repair.objectives import kl_to_teacher, next_token_loss

LONG = (
    "the river town of Ambrel keeps its old granary by the north gate and every spring the "
    "council opens it for the seed market that draws farmers from the hills"
)


def _probe(pid: str, text: str, category: str = "c") -> ProbeSample:
    return ProbeSample(id=pid, category=category, text=text)


# --------------------------------------------------------------------------------------------
# Overlap of the repair data with the judging probes


def test_overlap_finds_copies_ignoring_case_and_punctuation():
    probes = [_probe("a", LONG), _probe("b", "a completely different sentence " * 4)]
    copy = LONG.upper().replace(" the ", ", the ") + " And more text follows here."
    found = find_probe_overlap(probes, ["unrelated text " * 10, copy])
    assert [i for i, _ in found.overlapping] == ["a"]
    assert found.overlapping[0][1] == 1.0
    assert found.n_repair_texts == 2 and found.n_probes == 2


def test_overlap_threshold_is_half_the_shingles():
    words = LONG.split()  # 30 words: 18 shingles of 13 words
    n_shingles = len(words) - 13 + 1
    probes = [_probe("a", LONG)]
    # The first k words hold k - 12 of the probe's shingles.
    half = 13 + math.ceil(n_shingles / 2) - 1
    assert find_probe_overlap(probes, [" ".join(words[:half])]).overlapping
    assert not find_probe_overlap(probes, [" ".join(words[: half - 1])]).overlapping


def test_overlap_short_probes_need_a_whole_copy():
    probes = [_probe("s", "Short probe text.")]
    assert find_probe_overlap(probes, ["before short probe text after"]).overlapping
    assert not find_probe_overlap(probes, ["before short probe after text"]).overlapping
    assert not find_probe_overlap(probes, ["xshort probe text"]).overlapping


def test_overlap_record_is_json():
    found = find_probe_overlap([_probe("a", LONG)], [LONG])
    record = found.to_json()
    assert record["n_overlapping"] == 1 and record["overlapping"] == [{"id": "a", "share": 1.0}]


# --------------------------------------------------------------------------------------------
# Roles of the repair texts


def _samples(per_category: int = 40) -> list[ProbeSample]:
    return [
        _probe(f"{c}-{i}", f"{c} text number {i}", c)
        for c in ("art", "law", "sea")
        for i in range(per_category)
    ]


@pytest.mark.parametrize("mode", ["wide", "narrow", "distill"])
def test_roles_by_mode_and_held_out_texts_are_never_trained(mode):
    texts = split_repair_texts(_samples(), mode=mode, categories=["law"], holdout=0.1, seed=3)
    held = {t for group in texts.heldout.values() for t in group}
    assert set(texts.heldout) == {"art", "law", "sea"}
    assert all(len(group) == 4 for group in texts.heldout.values())  # 10% of 40
    assert not held & set(texts.train) and not held & set(texts.anchor)
    law = {t for t in texts.train if t.startswith("law")}
    if mode == "wide":
        assert len(texts.train) == 3 * 36 and texts.anchor == []
    else:  # narrow and distill: the repaired category trains, the rest anchors
        assert set(texts.train) == law and len(law) == 36 and len(texts.anchor) == 72
        assert not any(t.startswith("law") for t in texts.anchor)
    again = split_repair_texts(_samples(), mode=mode, categories=["law"], holdout=0.1, seed=3)
    assert again == texts


def test_held_out_share_is_capped_per_category():
    texts = split_repair_texts(_samples(400), mode="wide", categories=["law"], holdout=0.3, seed=0)
    assert all(len(group) == MONITOR_PER_CATEGORY for group in texts.heldout.values())


def test_narrow_and_distill_need_text_of_the_repaired_category():
    with pytest.raises(InputError, match="no text of the category to repair: cooking"):
        split_repair_texts(_samples(), mode="narrow", categories=["cooking"], holdout=0.1, seed=0)
    wide = split_repair_texts(_samples(), mode="wide", categories=["cooking"], holdout=0.1, seed=0)
    assert len(wide.train) == 3 * 36


# --------------------------------------------------------------------------------------------
# Losses against a straightforward computation


def test_kl_to_teacher_matches_a_loop():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 7, generator=gen)
    teacher = torch.randn(2, 3, 9, generator=gen)  # two padding columns the student lacks
    expected = 0.0
    for b in range(2):
        for t in range(3):
            p = torch.softmax(teacher[b, t, :7].double(), 0)
            q = torch.softmax(student[b, t].double(), 0)
            expected += float((p * (p / q).log()).sum())
    expected /= 6
    assert float(kl_to_teacher(student, teacher)) == pytest.approx(expected, rel=1e-5)
    assert float(kl_to_teacher(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_next_token_loss_matches_a_loop():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, generator=gen)
    tokens = torch.randint(0, 5, (2, 4), generator=gen)
    nll = [
        -float(torch.log_softmax(logits[b, t].double(), 0)[tokens[b, t + 1]])
        for b in range(2)
        for t in range(3)
    ]
    assert float(next_token_loss(logits, tokens)) == pytest.approx(sum(nll) / 6, rel=1e-5)


# --------------------------------------------------------------------------------------------
# Checkpoints: no pickle, exact restore


def _train_steps(model, optimizer, generator, n):
    for _ in range(n):
        x = torch.randn(4, 3, generator=generator)
        loss = (model(x) ** 2).mean() + torch.randn(1).abs().sum() * 0  # touches the global RNG
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_checkpoint_restores_parameters_optimizer_and_rngs(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(5)
    _train_steps(model, optimizer, generator, 3)
    trainable = dict(model.named_parameters())
    state = TrainingState(step=3, losses=[1.0, 0.5, 0.25], history=[{"step": 0}], elapsed_s=2.0)
    path = save_checkpoint(tmp_path, state, trainable, optimizer, generator)
    assert path.name == "step-0000003" and latest_checkpoint(tmp_path) == path
    assert not list(tmp_path.glob("**/*.pt")) and not list(tmp_path.glob("**/*.bin"))
    _train_steps(model, optimizer, generator, 2)
    expected = {k: v.detach().clone() for k, v in model.named_parameters()}

    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    fresh_gen = torch.Generator().manual_seed(999)
    restored = load_checkpoint(path, dict(fresh.named_parameters()), fresh_opt, fresh_gen)
    assert restored == state
    _train_steps(fresh, fresh_opt, fresh_gen, 2)
    for name, value in fresh.named_parameters():
        assert torch.equal(value, expected[name]), name


def test_only_the_newest_complete_checkpoint_is_kept(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    generator = torch.Generator()
    for step in (5, 10):
        state = TrainingState(step=step, losses=[], history=[], elapsed_s=0.0)
        save_checkpoint(tmp_path, state, dict(model.named_parameters()), optimizer, generator)
    (tmp_path / ".tmp-step-0000015").mkdir()  # a checkpoint that was being written at a kill
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("step-")] == ["step-0000010"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-0000010"


# --------------------------------------------------------------------------------------------
# The outcome rule on attestations with a known answer


def _att(verdict, levels, flagged=(), floor=0.02):
    median = sorted(levels.values())[len(levels) // 2]
    return Attestation.from_json(_att_json(verdict, levels, flagged, floor, median))


def _att_json(verdict, levels, flagged, floor, median):
    return {
        "schema": "lmassay.attestation/v1",
        "verdict": verdict,
        "comparison": "kl",
        "flagged": list(flagged),
        "summary": {"statistic": "mean_kl", "noise_floor": floor},
        "categories": [
            {
                "name": name,
                "level": level,
                "mean_kl": level,
                "effect": level - median,
                "flagged": name in flagged,
                "ppl_model": 10.0 + level,
                "ppl_reference": 10.0,
                "q_value": 0.01 if name in flagged else 0.5,
            }
            for name, level in levels.items()
        ],
    }


BEFORE = _att("tampered", {"a": 0.10, "b": 0.10, "c": 0.10, "d": 0.40}, flagged=["d"])


def test_outcome_success_when_back_under_the_floor():
    after = _att("consistent", {"a": 0.095, "b": 0.10, "c": 0.115, "d": 0.115})
    outcome = compare_attestations(BEFORE, after, ["d"])
    assert outcome["success"] and outcome["still_above_floor"] == []
    row = next(r for r in outcome["categories"] if r["name"] == "d")
    assert row["role"] == "repaired" and row["level_change"] == pytest.approx(-0.285)
    assert outcome["collateral_max_level_change"] == pytest.approx(0.015)


def test_outcome_fails_above_the_floor_even_when_not_flagged():
    after = _att("consistent", {"a": 0.10, "b": 0.10, "c": 0.10, "d": 0.13})
    outcome = compare_attestations(BEFORE, after, ["d"])
    assert not outcome["success"] and outcome["still_above_floor"] == ["d"]
    assert "not back under the noise floor" in outcome["message"]


def test_outcome_fails_on_collateral_flags_and_on_a_different_model():
    after = _att("tampered", {"a": 0.30, "b": 0.10, "c": 0.10, "d": 0.10}, flagged=["a"])
    outcome = compare_attestations(BEFORE, after, ["d"])
    assert not outcome["success"] and outcome["newly_flagged"] == ["a"]
    different = _att("different-model", {"a": 0.9, "b": 0.9, "c": 0.9, "d": 0.9})
    outcome = compare_attestations(BEFORE, different, ["d"])
    assert not outcome["success"] and "different-model" in outcome["message"]


def test_outcome_reads_the_parsed_json_as_the_document_and_new_categories_have_no_before():
    levels = {"a": 0.095, "b": 0.10, "c": 0.115, "d": 0.115, "e": 0.2}
    raw = _att_json("consistent", levels, (), 0.02, 0.115)  # what attest() returns
    outcome = compare_attestations(BEFORE, raw, ["d"])
    assert outcome == compare_attestations(BEFORE, Attestation.from_json(raw), ["d"])
    row = next(r for r in outcome["categories"] if r["name"] == "e")
    assert row["role"] == "collateral" and row["flagged_before"] is False
    assert row["level_before"] is None and row["level_change"] is None
    assert row["level_after"] == pytest.approx(0.2)
    assert outcome["verdict_before"] == "tampered" and outcome["flagged_before"] == ["d"]


# --------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"mode": "deep"}, "--mode"),
        ({"method": "qlora"}, "--method"),
        ({"steps": 0}, "--steps"),
        ({"lr": -1.0}, "--lr"),
        ({"holdout": 0.7}, "--holdout"),
        ({"save_adapter": True, "method": "full"}, "--save-adapter"),
        ({"seq_len": 4}, "--seq-len"),
        ({"kl_weight": -0.5}, "--kl-weight"),
        ({"dtype": "float16"}, "--dtype"),
    ],
)
def test_config_names_the_offending_flag(change, flag, tmp_path):
    base = {"model": "m", "attestation": "a.json", "data": "d.jsonl", "out": str(tmp_path / "o")}
    with pytest.raises(InputError, match=flag):
        RepairConfig(**base, **change).validate()


def test_default_learning_rate_follows_the_method():
    base = {"model": "m", "attestation": "a", "data": "d", "out": "o"}
    assert RepairConfig(**base).learning_rate == 1e-3
    assert RepairConfig(**base, method="full").learning_rate == 1e-4
    assert RepairConfig(**base, lr=5e-4).learning_rate == 5e-4


# --------------------------------------------------------------------------------------------
# Early stopping on the held-out gap


def test_early_stop_needs_every_group_under_the_stop_gap():
    from lmassay.repair.training import (
        LoopResult,
        LoopSettings,
        _effective_stop_gap,
        _repaired,
    )

    settings = LoopSettings(objective="lm", steps=10, lr=1e-3, batch_size=1, seq_len=8, seed=0,
                            stop_gap=0.01)  # fmt: skip
    seen = LoopResult(losses=[], history=[{"step": 0, "worst": 0.04}])
    assert _effective_stop_gap(seen, settings) == 0.01 and seen.early_stop_note is None
    assert not _repaired(seen, 0.01)  # the check before training never stops it
    seen.history.append({"step": 25, "worst": 0.02})  # a group (repaired or not) still stands out
    assert not _repaired(seen, 0.01)
    seen.history.append({"step": 40, "worst": 0.005, "within_guard": False})  # collateral rose
    assert not _repaired(seen, 0.01)
    seen.history.append({"step": 50, "worst": 0.005, "within_guard": True})
    assert _repaired(seen, 0.01)
    blind = LoopResult(losses=[], history=[{"step": 0, "worst": 0.003}])
    assert _effective_stop_gap(blind, settings) is None
    assert "no early stop" in (blind.early_stop_note or "")
    blind.history.append({"step": 25, "worst": 0.001})
    assert not _repaired(blind, None)


def test_monitor_effects_watch_every_group(monkeypatch):
    """Each group's effect is its level minus the median of the others; the worst may be a
    category that was not repaired (here b, pushed up while a came down). The reference samples
    count in the medians but are not a category: never the worst."""
    from lmassay.repair import training
    from lmassay.repair.anchor import SAMPLED

    levels = {"a": 0.12, "b": 0.30, "c": 0.10, SAMPLED: 0.40}
    rows = {name: [[i] for i in range(3)] for name in levels}
    by_row = {id(rows[name]): value for name, value in levels.items()}
    monkeypatch.setattr(training, "_sample_kls", lambda models, r: [by_row[id(r)]] * len(r))
    models = training.Models(
        model=torch.nn.Identity(), reference=object(), start=None, device=torch.device("cpu")
    )
    streams = training.Streams(torch.zeros(1), None, rows, ("a",))
    settings = training.LoopSettings("distill", 1, 1e-3, 1, 8, 0)
    check = training._monitor(models, streams, settings)
    assert check is not None and check["levels"] == pytest.approx(levels)
    assert check["effects"]["b"] == pytest.approx(0.30 - 0.12)  # median of 0.12, 0.10, 0.40
    assert check["gap"] == pytest.approx(0.12 - 0.30)  # a: median of 0.30, 0.10, 0.40
    assert check["effects"][SAMPLED] == pytest.approx(0.40 - 0.12)
    assert check["worst_group"] == "b" and check["worst"] == pytest.approx(0.18)
    one = training.Streams(torch.zeros(1), None, {"a": rows["a"]}, ("a",))
    assert training._monitor(models, one, settings) is None  # nothing to compare with


def test_the_collateral_guard_and_the_choice_of_the_best_check(monkeypatch):
    """A check where a group that is not repaired rose more than the tolerance is never kept,
    however low its worst effect; of the others, the latest within tolerance / 2 of the lowest
    worst effect is."""
    import statistics

    from lmassay.repair import training

    settings = training.LoopSettings("distill", 1, 1e-3, 1, 8, 0, tolerance=0.02)
    streams = training.Streams(torch.zeros(1), None, {}, ("a",))
    weights = {"w": torch.zeros(1)}
    result, best = training.LoopResult(losses=[]), training._Best()
    script = [  # (step, levels): a is repaired, b and s are not; worst effect in the comment
        (0, {"a": 0.40, "b": 0.10, "s": 0.20}),  # a: 0.40 - 0.15 = 0.25
        (25, {"a": 0.20, "b": 0.115, "s": 0.18}),  # a: 0.20 - 0.1475 = 0.0525
        (50, {"a": 0.05, "b": 0.15, "s": 0.16}),  # s: 0.06, but b rose 0.05 > 0.02
        (75, {"a": 0.16, "b": 0.11, "s": 0.165}),  # s: 0.165 - 0.135 = 0.03, the lowest
        (100, {"a": 0.17, "b": 0.11, "s": 0.165}),  # a: 0.0325, within 0.01 of it: kept
    ]
    for step, levels in script:
        weights["w"].fill_(step)
        effects = {
            g: v - statistics.median(x for k, x in levels.items() if k != g)
            for g, v in levels.items()
        }
        worst = max(effects, key=lambda g: effects[g])
        check = {"worst": effects[worst], "worst_group": worst, "levels": levels}
        monkeypatch.setattr(training, "_monitor", lambda *_, check=check: dict(check))
        training._check(None, streams, settings, step, result, best, weights)
    assert [h["within_guard"] for h in result.history] == [True, True, False, True, True]
    assert result.history[2]["rise"] == pytest.approx(0.05)
    assert best.step == 100 and float(best.weights["w"]) == 100.0
    assert best.worst == pytest.approx(0.0325)


# --------------------------------------------------------------------------------------------
# The loop keeps the best held-out check, also across a resume


def _tiny_loop(world_tokenizer, tmp_path, monkeypatch, worst, *, keep_best=True, fail_at=None,
               first_check=0):  # fmt: skip
    """A tiny GPT-2 distilled toward another for 20 steps, checked every 5 (steps 0-20) with
    the scripted worst effects ``worst``; returns the final weights, those at each check, and
    the result."""
    from lmassay.repair import training
    from lmassay.world.tiny_lm import build_model, tiny_gpt2_config

    tok = world_tokenizer
    config = tiny_gpt2_config(len(tok), n_layer=1, n_embd=32, n_positions=32,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    model, reference = build_model(config, seed=0), build_model(config, seed=1)
    for p in reference.parameters():
        p.requires_grad_(False)
    seen: dict[int, dict[str, torch.Tensor]] = {}
    steps = iter(range(first_check, 25, 5))

    def scripted(models, streams, settings):
        step = next(steps)
        if step == fail_at:
            raise KeyboardInterrupt  # a kill between the checkpoint of step 10 and the end
        seen[step] = {k: v.detach().clone() for k, v in model.named_parameters()}
        return {"gap": worst[step], "worst": worst[step], "worst_group": "a", "levels": {}}

    monkeypatch.setattr(training, "_monitor", scripted)
    texts = [" ".join(["the river town keeps its granary"] * 4)] * 8
    models = training.Models(model, reference, contextlib.nullcontext, torch.device("cpu"))
    streams = training.Streams(training.token_stream(tok, texts), None, {}, ("a",))
    settings = training.LoopSettings("distill", 20, 1e-2, 2, 16, 0, eval_every=5,
                                     checkpoint_every=10, keep_best=keep_best)  # fmt: skip
    result = training.run_loop(models, streams, settings, tmp_path / "checkpoints")
    final = {k: v.detach().clone() for k, v in model.named_parameters()}
    return final, seen, result


WORST = {0: 0.5, 5: 0.3, 10: 0.1, 15: 0.4, 20: 0.6}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_loop_restores_the_best_check_and_a_resumed_run_does_too(
    world_tokenizer, tmp_path, monkeypatch
):
    final, seen, result = _tiny_loop(world_tokenizer, tmp_path / "a", monkeypatch, WORST)
    assert _same(final, seen[10]) and not _same(final, seen[20])
    assert result.restored_best and result.best_step == 10 and result.best_worst == 0.1
    last, seen_last, kept_last = _tiny_loop(
        world_tokenizer, tmp_path / "b", monkeypatch, WORST, keep_best=False
    )
    assert _same(last, seen_last[20]) and not kept_last.restored_best

    with pytest.raises(KeyboardInterrupt):
        _tiny_loop(world_tokenizer, tmp_path / "c", monkeypatch, WORST, fail_at=15)
    assert latest_checkpoint(tmp_path / "c" / "checkpoints").name == "step-0000010"
    resumed, _, again = _tiny_loop(
        world_tokenizer, tmp_path / "c", monkeypatch, WORST, first_check=15
    )
    assert again.resumed_from == 10 and again.best_step == 10
    assert _same(resumed, final)
