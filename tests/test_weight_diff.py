"""Weight diff: a rank-one edit is named as rank ~1 and everything else as unchanged."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from lmassay.cli import app
from lmassay.errors import InputError
from lmassay.sealing.weight_diff import DiffConfig, diff_weights, layer_and_kind, render_html

EDITED = "transformer.h.1.mlp.c_fc.weight"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _tiny_model(seed: int = 0, n_embd: int = 32):
    from lmassay.world.tiny_lm import build_model, tiny_gpt2_config

    return build_model(tiny_gpt2_config(64, n_layer=2, n_embd=n_embd, n_positions=32), seed=seed)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """base/, base-sharded/, edited/ (rank-one edit of one MLP weight) and noisy/ (full-rank change)."""
    root = tmp_path_factory.mktemp("diff")
    model = _tiny_model()
    model.save_pretrained(root / "base")
    model.save_pretrained(root / "base-sharded", max_shard_size="40KB")
    generator = torch.Generator().manual_seed(1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    weight = state[EDITED]  # (n_embd, 4 n_embd) — GPT-2 Conv1D layout
    u = torch.randn(weight.shape[0], 1, generator=generator)  # (32, 1)
    v = torch.randn(1, weight.shape[1], generator=generator)  # (1, 128)
    edit = 0.05 * u @ v  # (32, 128), rank one
    with torch.no_grad():
        model.get_parameter(EDITED).add_(edit)
    model.save_pretrained(root / "edited")
    with torch.no_grad():
        noisy_name = "transformer.h.0.attn.c_attn.weight"
        model.get_parameter(noisy_name).add_(
            0.01 * torch.randn(model.get_parameter(noisy_name).shape, generator=generator)
        )
    model.save_pretrained(root / "noisy")
    return {"root": root, "state": state, "edit": edit}


def test_rank_one_edit_is_the_only_change(checkpoints):
    root = checkpoints["root"]
    diff = diff_weights(DiffConfig(str(root / "base"), str(root / "edited")))
    assert [t.name for t in diff.changed] == [EDITED]
    edited = diff.changed[0]
    assert edited.effective_rank == 1 and edited.svd == "exact"
    assert edited.entropy_rank == pytest.approx(1.0, abs=0.05)
    # independent computation of the relative change (float32 as saved)
    base_w = checkpoints["state"][EDITED]
    new_w = base_w + checkpoints["edit"]
    expected = float(torch.linalg.norm(new_w - base_w) / torch.linalg.norm(base_w))
    assert edited.rel_change == pytest.approx(expected, rel=1e-4)
    assert edited.layer == 1 and edited.kind == "mlp.c_fc.weight"
    untouched = [t for t in diff.tensors if t.name != EDITED]
    assert untouched and all(not t.changed and t.rel_change == 0.0 for t in untouched)
    assert all(t.effective_rank is None for t in untouched)
    assert diff.tensors[0].name == EDITED  # changed tensors first


def test_full_rank_change_and_sharded_base(checkpoints):
    root = checkpoints["root"]
    diff = diff_weights(DiffConfig(str(root / "base-sharded"), str(root / "noisy")))
    ranks = {t.name: t.effective_rank for t in diff.changed}
    assert set(ranks) == {EDITED, "transformer.h.0.attn.c_attn.weight"}
    assert ranks[EDITED] == 1
    assert ranks["transformer.h.0.attn.c_attn.weight"] > 16  # noise is full rank (32 x 96)


def test_randomized_svd_for_large_tensors(checkpoints):
    root = checkpoints["root"]
    diff = diff_weights(
        DiffConfig(str(root / "base"), str(root / "edited"), exact_svd_max=8, lowrank_q=8)
    )
    (edited,) = diff.changed
    assert edited.svd == "lowrank" and edited.effective_rank == 1 and not edited.rank_saturated


def test_mismatched_architectures_are_a_clear_error(checkpoints, tmp_path):
    other = _tiny_model(n_embd=16)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(InputError, match="same architecture") as info:
        diff_weights(DiffConfig(str(checkpoints["root"] / "base"), str(tmp_path / "other")))
    assert "shape of" in info.value.what and "BASE" in info.value.fix
    result = invoke("diff", checkpoints["root"] / "base", tmp_path / "other")
    assert result.exit_code == 2 and result.output.startswith("diff failed:")
    result = invoke("diff", checkpoints["root"] / "base", tmp_path / "nowhere")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_cli_table_json_and_html(checkpoints, tmp_path):
    root = checkpoints["root"]
    result = invoke(
        "diff", root / "base", root / "edited", "--json", tmp_path / "d.json",
        "--html", tmp_path / "d.html", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert EDITED in result.output and "unchanged" in result.output
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["n_changed"] == 1 and data["tensors"][0]["effective_rank"] == 1
    assert data["layer_map"]["1"]["mlp.c_fc.weight"] > 0
    assert data["layer_map"]["0"]["mlp.c_fc.weight"] == 0
    page = (tmp_path / "d.html").read_text()
    assert "mlp.c_fc.weight" in page and "<script" not in page and "http" not in page


def test_html_escapes_names():
    from lmassay.sealing.weight_diff import TensorDiff, WeightDiff

    item = TensorDiff("h.0.<b>x</b>", 0, "<b>x</b>", [2], "float32", True, 1.0, 1.0, 1.0, 1.0)
    page = render_html(WeightDiff("a<", "b>", [item], {"rank_rtol": 0.01}))
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_layer_parsing():
    assert layer_and_kind("model.layers.12.self_attn.q_proj.weight") == (
        12,
        "self_attn.q_proj.weight",
    )
    assert layer_and_kind("transformer.h.0.ln_1.bias") == (0, "ln_1.bias")
    assert layer_and_kind("transformer.wte.weight") == (None, "transformer.wte.weight")


def test_tied_name_on_one_side_is_an_alias(tmp_path):
    """A checkpoint that stores the tied head separately still diffs against one that does not."""
    from safetensors.torch import save_file

    embed = torch.arange(12, dtype=torch.float32).reshape(4, 3)  # (vocab, dim)
    save_file({"wte.weight": embed, "h.0.w": torch.ones(3, 3)}, str(tmp_path / "base.safetensors"))
    untied = {"wte.weight": embed, "lm_head.weight": embed.clone(), "h.0.w": torch.ones(3, 3) * 2}
    save_file(untied, str(tmp_path / "model.safetensors"))
    diff = diff_weights(
        DiffConfig(str(tmp_path / "base.safetensors"), str(tmp_path / "model.safetensors"))
    )
    assert [t.name for t in diff.tensors] == ["h.0.w", "wte.weight"]
    assert diff.tensors[1].aliases == ["lm_head.weight"] and not diff.tensors[1].changed
    assert diff.tensors[0].rel_change == pytest.approx(1.0)
    # a head that differs from the embeddings is a different architecture, not a tie
    untied["lm_head.weight"] = embed + 1
    save_file(untied, str(tmp_path / "model.safetensors"))
    with pytest.raises(InputError, match=r"only in MODEL: lm_head\.weight"):
        diff_weights(
            DiffConfig(str(tmp_path / "base.safetensors"), str(tmp_path / "model.safetensors"))
        )


def test_pickled_only_checkpoint_is_refused(tmp_path, checkpoints):
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(checkpoints["root"] / "base" / "config.json", folder / "config.json")
    with pytest.raises(InputError, match=r"no \.safetensors"):
        diff_weights(DiffConfig(str(folder), str(checkpoints["root"] / "base")))
