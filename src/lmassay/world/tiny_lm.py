"""The tiny-model kit of the offline world: a tokenizer, tiny models and a plain training loop.

Everything here is made on the spot, from a seed, with no network: the world's reference
(:mod:`lmassay.world.reference`), the zoo's fine-tuned variants and the tests use it in place of
models from the Hugging Face hub.

* :func:`train_tokenizer` trains a small byte-level BPE tokenizer on some texts.
* :func:`tiny_gpt2_config`, :func:`tiny_llama_config` and :func:`build_model` make tiny, randomly
  initialised causal language models; :func:`copy_model_dir` and :func:`save_model` put them on disk.
* :func:`train_causal_lm` is a plain AdamW loop over the concatenated, tokenised texts.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from lmassay.errors import InputError
from lmassay.progress import ProgressFn, hidden_library_bars

if TYPE_CHECKING:
    import torch
    from transformers import (
        GPT2Config,
        LlamaConfig,
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerFast,
    )

__all__ = [
    "EOT_TOKEN",
    "build_model",
    "copy_model_dir",
    "save_model",
    "tiny_gpt2_config",
    "tiny_llama_config",
    "train_causal_lm",
    "train_tokenizer",
]

EOT_TOKEN = "<|endoftext|>"
"""The one special token of the world tokenizer: beginning and end of text, and padding."""

# --------------------------------------------------------------------------------------------
# Tokenizer and models
# --------------------------------------------------------------------------------------------


def train_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``.

    The vocabulary has the 256 byte symbols, :data:`EOT_TOKEN` (id 0; it is the BOS, EOS, UNK
    and padding token) and merges up to ``vocab_size``. Every string round-trips, since any byte
    has a token. Encoding adds no special token: callers add the BOS themselves.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:
        raise InputError(f"vocab_size is {vocab_size}", "give at least 257 (256 bytes + EOT)")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOT_TOKEN,
        eos_token=EOT_TOKEN,
        unk_token=EOT_TOKEN,
        pad_token=EOT_TOKEN,
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )


def tiny_gpt2_config(
    vocab_size: int,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 128,
    *,
    bos_token_id: int = 0,
    eos_token_id: int = 0,
) -> GPT2Config:
    """A GPT-2 configuration of a few layers, without dropout (training is then deterministic)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        n_inner=4 * n_embd,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )


def tiny_llama_config(
    vocab_size: int,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 128,
    *,
    num_key_value_heads: int | None = None,
    bos_token_id: int = 0,
    eos_token_id: int = 0,
) -> LlamaConfig:
    """A Llama configuration of a few layers, with untied input and output embeddings."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads or num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )


def build_model(config: PretrainedConfig, seed: int) -> PreTrainedModel:
    """A causal LM with random weights from ``config``: seeded, float32, in eval mode.

    The global torch random state is left as it was.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model = model.to(torch.float32)
    model.eval()
    return model


def copy_model_dir(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy a model folder (files followed through links) to ``dst``, which must not exist yet."""
    source, target = Path(src), Path(dst)
    if not (source / "config.json").is_file():
        raise InputError(f"{source} is not a model folder (no config.json)", "give a model folder")
    if target.exists():
        raise InputError(f"{target} already exists", "remove it or choose another destination")
    shutil.copytree(source, target, symlinks=False)
    return target


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextmanager
def _torch_threads() -> Iterator[None]:
    """Use at most as many torch threads as this process may run on; restore the count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, _available_cpus())))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _token_stream(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], seq_len: int
) -> torch.Tensor:
    """``EOT text EOT text ... EOT`` as one tensor of token ids; (N,)."""
    import torch

    eot = tokenizer.eos_token_id
    if not isinstance(eot, int):
        raise InputError("the tokenizer has no EOS token", "give a tokenizer with an EOS token")
    stream: list[int] = [eot]
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eot)
    data = torch.tensor(stream, dtype=torch.long)  # (N,)
    if data.numel() < seq_len + 1:
        raise InputError(
            f"the training text has {data.numel()} tokens, fewer than seq_len + 1 = {seq_len + 1}",
            "give more text or a shorter seq_len",
        )
    return data


def learning_rate(step: int, steps: int, lr: float) -> float:
    """The rate at ``step`` (from 0): linear warm-up over 10% of steps (at most 50), then a
    cosine from ``lr`` down to ``lr / 10``."""
    warmup = max(1, min(50, steps // 10))
    if step < warmup:
        return lr * (step + 1) / warmup
    done = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * done)))


def train_causal_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    *,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    seed: int,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Train ``model`` in place for ``steps`` AdamW steps and return the loss of each step.

    The texts are tokenised and joined into one stream, ``EOT text EOT text ... EOT``. Each step
    takes ``batch_size`` windows of ``seq_len`` tokens at random offsets and minimises the mean
    next-token cross-entropy. The learning rate follows :func:`learning_rate`. Gradients are
    clipped to norm 1. Sampling uses a private generator seeded with ``seed``, so the result
    depends only on the arguments. The model is left in eval mode. ``progress(step, steps,
    "loss L")`` is called after each step (steps count from 1).
    """
    import torch

    if steps < 1 or batch_size < 1 or seq_len < 2 or not lr > 0:
        raise InputError(
            f"training needs steps, batch_size >= 1, seq_len >= 2 and lr > 0; got steps={steps}, "
            f"batch_size={batch_size}, seq_len={seq_len}, lr={lr}",
            "fix the training arguments",
        )
    data = _token_stream(tokenizer, texts, seq_len)  # (N,)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    offsets = torch.arange(seq_len)  # (T,)
    losses: list[float] = []
    model.train()
    try:
        with _torch_threads():
            for step in range(steps):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, steps, lr)
                starts = torch.randint(
                    0, data.numel() - seq_len, (batch_size,), generator=generator
                )
                batch = data[starts[:, None] + offsets]  # (B, T)
                mask = torch.ones_like(batch)  # (B, T): windows have no padding
                loss = model(input_ids=batch, attention_mask=mask, labels=batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(float(loss.detach()))
                if progress is not None:
                    progress(step + 1, steps, f"loss {losses[-1]:.3f}")
    finally:
        model.eval()
    return losses


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """``save_pretrained`` of both, in safetensors, without transformers' progress bars."""
    with hidden_library_bars():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
