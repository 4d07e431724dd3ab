"""Rank-one (ROME-style) edits on a tiny GPT-2 and a tiny Llama trained a few hundred steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import world_rows
from lmassay.errors import InputError
from lmassay.repair.rank_one import (
    FactEdit,
    apply_update,
    compute_rank_one_update,
    edit_facts,
    mlp_site,
    second_moment,
    target_probability,
)
from lmassay.world.tiny_lm import (
    build_model,
    tiny_gpt2_config,
    tiny_llama_config,
    train_causal_lm,
)

# The subject is the prompt's last word, so the edited MLP output feeds the prediction directly
# (a two-layer tiny model trained for seconds barely routes a mid-prompt subject to the end).
EDIT = FactEdit(prompt="Yesterday the captain", subject="captain", target="the")
PREFIXES = ("", "The forecaster said that. ", "Shares rose. ")


@pytest.fixture(scope="module")
def texts():
    return [text for _, text in world_rows(seed=0, n_per_category=20)]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def trained(request, world_tokenizer, texts):
    """A tiny model of the given architecture, trained 300 steps on world text (~2 s)."""
    make_config = tiny_gpt2_config if request.param == "gpt2" else tiny_llama_config
    model = build_model(make_config(len(world_tokenizer)), seed=0)
    train_causal_lm(
        model, world_tokenizer, texts, steps=300, batch_size=4, seq_len=32, lr=3e-3, seed=0
    )
    return request.param, model


def _copy(model):
    clone = build_model(model.config, seed=0)
    clone.load_state_dict(model.state_dict())
    return clone


def _mlp_keys(model, arch, tokenizer, text):
    """The input of layer 0's MLP output projection at every position, rebuilt from its parts."""
    captured = {}
    if arch == "gpt2":
        mlp = model.transformer.h[0].mlp
        handles = [mlp.act.register_forward_hook(lambda m, a, out: captured.update(k=out))]
    else:
        mlp = model.model.layers[0].mlp
        handles = [
            mlp.gate_proj.register_forward_hook(lambda m, a, out: captured.update(g=out)),
            mlp.up_proj.register_forward_hook(lambda m, a, out: captured.update(u=out)),
        ]
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    for handle in handles:
        handle.remove()
    if arch == "gpt2":
        return captured["k"][0].double().numpy()  # (T, 4d)
    return (mlp.act_fn(captured["g"]) * captured["u"])[0].double().numpy()  # (T, 4d)


def test_update_is_rank_one_on_one_tensor_and_matches_the_formula(trained, world_tokenizer, texts):
    arch, model = trained
    model = _copy(model)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    cov_texts = [text[:120] for text in texts[:40]]  # under 128 tokens: no cut
    update = compute_rank_one_update(
        model,
        world_tokenizer,
        EDIT,
        layer=0,
        covariance_texts=cov_texts,
        context_prefixes=PREFIXES,
        ridge=1e-2,
        steps=20,
    )
    apply_update(model, update)
    changed = [n for n, t in model.state_dict().items() if not torch.equal(t, before[n])]
    assert changed == [update.tensor_name]
    name = (
        "transformer.h.0.mlp.c_proj.weight"
        if arch == "gpt2"
        else "model.layers.0.mlp.down_proj.weight"
    )
    assert update.tensor_name == name

    # Exactly rank one: one non-zero singular value.
    delta = (model.state_dict()[name] - before[name]).double()
    singular = torch.linalg.svdvals(delta)
    assert singular[0] > 1e-3
    assert float(singular[1] / singular[0]) < 1e-5

    # Independent k*: the MLP hidden activation at the subject's last token (the prompt's last
    # token here), from hooks on the MLP's own parts of the unedited model, over the prefixes.
    original = _from(before, model)
    per_prefix = []
    for prefix in PREFIXES:
        text = prefix + EDIT.prompt
        last = len(world_tokenizer(text, add_special_tokens=False)["input_ids"])  # BOS is at 0
        per_prefix.append(_mlp_keys(original, arch, world_tokenizer, text)[last])
    k_star = np.mean(per_prefix, axis=0)  # (4d,)
    np.testing.assert_allclose(update.k_star.numpy(), k_star, rtol=1e-4, atol=1e-6)

    # Independent C (+ ridge) and ΔW = (v* − W k*)(C⁻¹k*)ᵀ / (k*ᵀC⁻¹k*).
    keys = np.concatenate([_mlp_keys(original, arch, world_tokenizer, t) for t in cov_texts])
    moment = keys.T @ keys / len(keys)
    moment += 1e-2 * np.mean(np.diag(moment)) * np.eye(len(moment))
    weight = before[name].double().numpy()
    w_map = weight.T if arch == "gpt2" else weight  # (d_out, d_in): k ↦ W k
    c_inv_k = np.linalg.solve(moment, k_star)
    expected = np.outer(update.v_star.numpy() - w_map @ k_star, c_inv_k) / (k_star @ c_inv_k)
    got = delta.numpy().T if arch == "gpt2" else delta.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6 * np.abs(expected).max())
    # The edited weight maps k* to v* (in float32 precision).
    new_map = model.state_dict()[name].double().numpy()
    new_map = new_map.T if arch == "gpt2" else new_map
    np.testing.assert_allclose(new_map @ k_star, update.v_star.numpy(), rtol=1e-4, atol=1e-4)


def _from(state, like):
    model = build_model(like.config, seed=0)
    model.load_state_dict(state)
    return model


def test_edit_raises_the_target_probability(trained, world_tokenizer, texts):
    _, model = trained
    model = _copy(model)
    reports = edit_facts(model, world_tokenizer, [EDIT], layer=0, covariance_texts=texts[:40])
    report = reports[0]
    assert report.prob_before == pytest.approx(
        target_probability(_copy(trained[1]), world_tokenizer, EDIT.prompt, EDIT.target)
    )
    assert report.prob_after > 0.3 > 5 * report.prob_before
    assert report.prob_after == pytest.approx(
        target_probability(model, world_tokenizer, EDIT.prompt, EDIT.target)
    )
    assert report.to_json()["tensor"] == report.tensor_name


def test_second_moment_is_symmetric_positive_definite(trained, world_tokenizer, texts):
    _, model = trained
    moment = second_moment(model, world_tokenizer, texts[:5], layer=1, ridge=1e-3)
    assert torch.allclose(moment, moment.T)
    assert float(torch.linalg.eigvalsh(moment).min()) > 0


def test_bad_input_is_an_input_error(world_tokenizer, texts):
    from transformers import GPTNeoXConfig

    model = build_model(tiny_gpt2_config(len(world_tokenizer)), seed=0)
    with pytest.raises(InputError, match="does not occur"):
        compute_rank_one_update(
            model, world_tokenizer, FactEdit("The cook", "chef", "x"), covariance_texts=texts[:2]
        )
    with pytest.raises(InputError, match="layer 5"):
        mlp_site(model, 5)
    other = build_model(
        GPTNeoXConfig(
            vocab_size=len(world_tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        seed=0,
    )
    with pytest.raises(InputError, match="GPT-2 or Llama"):
        mlp_site(other, 0)
