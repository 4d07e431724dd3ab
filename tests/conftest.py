"""Shared test set-up: small thread counts, no tokenizer parallelism, tiny models from configs."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Commands that record into the registry (attest, seal, verify) must never touch the user's own.
os.environ["LMASSAY_REGISTRY"] = os.path.join(
    tempfile.mkdtemp(prefix="lmassay-test-registry-"), "registry.sqlite"
)
# The demo's cache (world, reference, zoo) stays inside the test run too.
os.environ["LMASSAY_CACHE"] = tempfile.mkdtemp(prefix="lmassay-test-cache-")

import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def toy_tokenizer():
    """A small byte-level BPE tokenizer trained on the toy corpus."""
    from lmassay.world.tiny_lm import generate_toy_corpus, train_toy_tokenizer

    texts = [text for _, text in generate_toy_corpus(seed=0, n_per_category=20)]
    return train_toy_tokenizer(texts, vocab_size=300)


def save_tiny_model(folder: Path, tokenizer, *, seed: int = 0, arch: str = "gpt2") -> Path:
    """Save a randomly initialised tiny model with ``tokenizer`` as a transformers folder."""
    from lmassay.world.tiny_lm import build_model, tiny_gpt2_config, tiny_llama_config

    make_config = tiny_gpt2_config if arch == "gpt2" else tiny_llama_config
    config = make_config(
        len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    model = build_model(config, seed=seed)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, toy_tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", toy_tokenizer)


@pytest.fixture(scope="session")
def toy_pair(tmp_path_factory):
    """The toy reference, a copy fine-tuned on 'cooking', and held-out probes (size 'test')."""
    from lmassay.world.tiny_lm import build_toy_pair

    return build_toy_pair(tmp_path_factory.mktemp("toy") / "pair", seed=0, size="test")


@pytest.fixture(scope="session")
def world_reference():
    """The test-size world and its reference, made once per session (about 25 s on 2 cores).

    They go where ``lmassay demo --size test`` keeps them (the cache is a temp folder during
    tests), so the zoo's and the demo's tests reuse them. Returns ``(WorldFiles, ReferenceInfo,
    cache root)``.
    """
    from lmassay.world import make_world
    from lmassay.world.demo import DemoConfig
    from lmassay.world.reference import train_reference

    root = DemoConfig(size="test").cache_root()
    files = make_world(root / "world", seed=0, size="test")
    info = train_reference(files.root, root / "reference", size="test", seed=0)
    return files, info, root
