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
# LMASSAY_TEST_CACHE=DIR keeps it (the trained test reference and variants) between runs instead.
# Under pytest-xdist (`make test` runs two workers) the workers of one run share one cache, keyed by
# the run's id: the first to build the world or a zoo variant holds the folder's lock
# (lmassay.cached_build) and the other waits and reuses it.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")


def _test_cache() -> str:
    if os.environ.get("LMASSAY_TEST_CACHE"):
        return os.environ["LMASSAY_TEST_CACHE"]
    if _RUN:
        folder = os.path.join(tempfile.gettempdir(), f"lmassay-test-cache-{_RUN}")
        os.makedirs(folder, exist_ok=True)
        return folder
    return tempfile.mkdtemp(prefix="lmassay-test-cache-")


os.environ["LMASSAY_CACHE"] = _test_cache()

import torch  # noqa: E402

# LMASSAY_TEST_THREADS=1 helps on a shared, busy machine (two spinning threads per process).
# Each xdist worker takes one core's share.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, os.cpu_count() or 1) // _WORKERS)
torch.set_num_threads(int(os.environ.get("LMASSAY_TEST_THREADS", _THREADS)))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def world_rows(seed: int = 0, n_per_category: int = 20) -> list[tuple[str, str]]:
    """``(category, paragraph)`` rows of the generated world of ``seed``, grouped by category."""
    from lmassay.world import CATEGORIES, build_world, render_documents

    world = build_world(seed)
    return [
        (category, text)
        for category in CATEGORIES
        for text in render_documents(world, category, n_per_category, seed=seed)
    ]


@pytest.fixture(scope="session")
def world_tokenizer():
    """A small byte-level BPE tokenizer trained on world text (no model training needed)."""
    from lmassay.world.tiny_lm import train_tokenizer

    return train_tokenizer([text for _, text in world_rows(0, 20)], vocab_size=300)


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
def tiny_model_dir(tmp_path_factory, world_tokenizer) -> Path:
    """A randomly initialised tiny GPT-2 with the world tokenizer, saved as a model folder."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", world_tokenizer)


@pytest.fixture(scope="session")
def world_reference():
    """The test-size world and its reference, made once per session (about 25 s on 2 cores).

    They go where ``lmassay demo --size test`` keeps them (the cache is a temp folder during
    tests), so the zoo's, the pair's and the demo's tests reuse them. Returns ``(WorldFiles,
    ReferenceInfo, cache root)``.
    """
    from lmassay.world import make_world
    from lmassay.world.demo import DemoConfig
    from lmassay.world.reference import train_reference

    root = DemoConfig(size="test").cache_root()
    files = make_world(root / "world", seed=0, size="test")
    info = train_reference(files.root, root / "reference", size="test", seed=0)
    return files, info, root


def _session_pair(kind: str):
    """The session's reference and its ``kind`` variant, where ``lmassay demo --size test`` and
    the zoo's tests keep them (``<cache>/zoo/<kind>``), so every test file shares one copy."""
    from lmassay.world.demo import DemoConfig
    from lmassay.world.pair import make_pair

    return make_pair(DemoConfig(size="test", kind=kind).pair())


@pytest.fixture(scope="session")
def world_pair(world_reference):
    """The test-size reference and its suppression variant (ground truth: ``religion``).

    Has ``reference``, ``tampered``, ``probes`` (the world's held-out split), ``train_texts`` and
    ``category``. At this size the zoo's fine-tuning (with replay) moves every category a little
    (mean KL 0.27-0.30 nats/token) and the suppressed one most (0.36): the KL comparison flags it
    alone; bits per byte do not single it out (use ``world_fact_pair`` for those).
    """
    pair = _session_pair("suppression")
    assert pair.category == "religion", pair.ground_truth
    return pair


@pytest.fixture(scope="session")
def world_fact_pair(world_reference):
    """The test-size reference and its fact-rome variant (rank-one edits of 5 geography facts, no
    fine-tuning): the bits-per-byte comparison flags ``geography`` alone."""
    pair = _session_pair("fact-rome")
    assert pair.category == "geography", pair.ground_truth
    return pair
