"""Loading models safely: safetensors only, offline hub ids, digests, tokenizer identity."""

from __future__ import annotations

import shutil
import time

import pytest
import torch

from conftest import save_tiny_model, world_rows
from lmassay.attest.model_loading import (
    ModelOptions,
    is_device_name,
    load_model,
    resolve_device,
    resolve_dtype,
    same_tokenizer,
)
from lmassay.digests import model_identity
from lmassay.errors import InputError, LmassayError, ModelLoadError


def test_loads_local_folder_and_records_digest(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    assert loaded.digest == model_identity(tiny_model_dir).root  # the model_signing manifest root
    assert loaded.dtype == "float32" and loaded.device == "cpu"
    assert loaded.max_length == 128
    assert loaded.prefix_token_id == loaded.tokenizer.bos_token_id
    described = loaded.describe()
    assert described["digest"]["algorithm"] == "sha256"
    assert "model.safetensors" in described["files"]
    assert described["n_parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert not loaded.model.training


def test_digest_changes_with_one_byte(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert model_identity(copy).root == model_identity(tiny_model_dir).root
    config = copy / "config.json"
    config.write_text(config.read_text() + " ")
    assert model_identity(copy).root != model_identity(tiny_model_dir).root


def test_bfloat16_dtype(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert loaded.dtype == "bfloat16"
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_refuses_pickled_weights_unless_allowed(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    model = load_model(str(tiny_model_dir), device="cpu").model
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder, safe_serialization=False)
    if not (folder / "pytorch_model.bin").exists():  # newer transformers always write safetensors
        (folder / "model.safetensors").unlink(missing_ok=True)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"pickled weights.*--allow-pickle"):
        load_model(str(folder), device="cpu")
    loaded = load_model(str(folder), device="cpu", allow_pickle=True)
    assert loaded.n_parameters == sum(p.numel() for p in model.parameters())


def test_missing_folder_and_missing_config(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope" / "model"), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(empty), device="cpu")
    file = tmp_path / "file.bin"
    file.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(str(file), device="cpu")


def test_uncached_hub_id_offline_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="cannot be reached"):
        load_model("someone/not-a-cached-model", device="cpu")
    assert time.perf_counter() - start < 10


def test_unknown_device_and_dtype():
    with pytest.raises(ModelLoadError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        resolve_dtype("int4", "cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_same_tokenizer(tiny_model_dir, tmp_path, world_tokenizer):
    from lmassay.world.tiny_lm import train_tokenizer

    twin = save_tiny_model(tmp_path / "twin", world_tokenizer, seed=1, arch="llama")
    texts = [t for _, t in world_rows(seed=5, n_per_category=10)]
    other = save_tiny_model(tmp_path / "other", train_tokenizer(texts, vocab_size=280), seed=2)
    a = load_model(str(tiny_model_dir), device="cpu")
    assert same_tokenizer(a, load_model(str(twin), device="cpu"))
    assert not same_tokenizer(a, load_model(str(other), device="cpu"))


def test_cuda_n_is_a_device_name_and_an_absent_gpu_fails_naming_the_flag():
    assert all(map(is_device_name, ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"]))
    assert not any(map(is_device_name, ["tpu", "cuda:", "cuda:x", "cuda0", "gpu:0"]))
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ModelLoadError, match=r"--device cuda:99 was asked for but .*GPU"):
        resolve_device("cuda:99")
    if visible:
        assert resolve_device("cuda:0") == "cuda:0"
        assert resolve_dtype("auto", "cuda:0") in (torch.bfloat16, torch.float16)


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        (ModelOptions(device="tpu"), "--device 'tpu'"),
        (ModelOptions(dtype="int4"), "--dtype 'int4'"),
        (ModelOptions(revision=" main"), "--revision"),
        (ModelOptions(device="cuda:99"), "--device cuda:99"),
    ],
)
def test_model_options_validate_names_the_flag(options, flag):
    with pytest.raises(LmassayError) as caught:
        options.validate()
    assert caught.value.what.startswith(flag)


def test_commands_share_one_model_options():
    """attest, repair and edit take the same loading fields, checked by the same validate()."""
    from lmassay.attest.recipe import AttestConfig
    from lmassay.repair.config import RepairConfig
    from lmassay.repair.edit import EditConfig

    configs = [
        AttestConfig("m", "p", "o", device="tpu"),
        RepairConfig("m", "a", "d", "o", device="tpu"),
        EditConfig("m", "f", "o", device="tpu"),
    ]
    for config in configs:
        assert isinstance(config, ModelOptions)
        with pytest.raises(InputError, match=r"--device 'tpu' is not known.*cuda:N"):
            config.validate()
    assert EditConfig("m", "f", "o").model_options == ModelOptions(dtype="float32")
    with pytest.raises(InputError, match="--dtype 'float16' cannot train"):
        RepairConfig("m", "a", "d", "o", dtype="float16").validate()


def test_model_options_load(tiny_model_dir):
    loaded = ModelOptions(device="cpu", dtype="bfloat16").load(str(tiny_model_dir))
    assert loaded.device == "cpu" and loaded.dtype == "bfloat16"
