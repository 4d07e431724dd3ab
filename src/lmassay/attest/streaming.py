"""Score models larger than memory, one transformer block at a time (``--offload stream``).

Contract: :func:`stream_score_token_lists` returns what :func:`lmassay.attest.scoring.score_token_lists`
returns for the same texts, windows and batches (the scoring contract in :mod:`lmassay.attest.scoring`),
to float tolerance, while holding at most two blocks' weights (the one computing, the next being read) (plus the embedding table during the
first pass, the small position table of GPT-2, the final norm, and at the end the output layer(s)).

How (per model):

1. Read ``config.json`` and build the model on the meta device (accelerate's
   ``init_empty_weights``: parameters take no memory; buffers such as rotary frequencies are real).
2. Plan the windows and batches exactly as the in-memory engine does.
3. Embedding pass: materialise the input embedding, run the model's own base forward on each batch
   up to block 0 (a pre-hook on block 0 stops it there) and keep the hidden states ``(B, T, H)``.
4. For each block ``i``: read its tensors from the safetensors files (positioned reads into the
   tensors' own memory: no copy of the whole file, no map of it), materialise the block, run every
   batch through it, free it.  Block ``i + 1`` is read by a background thread meanwhile, so disk
   reads overlap compute (at most two blocks' weights are held).  The block's keyword arguments (causal mask, position ids, rotary cos/sin) are the
   ones the model's own forward builds: the base forward is re-run on ``inputs_embeds`` up to block 0
   for each batch, so masks and positions match the in-memory path exactly.
5. Final norm, then only the *scored* rows are kept: ``(N, H)`` per batch.

Then the output layer (or both, for model + reference) is loaded and the rows are reduced batch by
batch by :func:`lmassay.attest.scoring.reduce_rows`, the one reduction of lmassay.

Memory: the activations of every window are kept between blocks, ``H × bytes(dtype)`` per padded
token position (8 KiB per token for a 4,096-wide model in bfloat16: 8 GiB per million tokens), plus
``H × bytes`` per scored token per model for the final states.  They are kept in CPU memory; a probe
set too large for that should be scored in parts.

Families: GPT-2, Llama / Mistral / Qwen2 / Qwen3, GPT-NeoX (:data:`FAMILIES`); any other
architecture is refused with an :class:`~lmassay.errors.InputError` naming it.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmassay.attest.scoring import (
    ProgressFn,
    TokenScores,
    Window,
    batch_inputs,
    check_token_lists,
    default_token_budget,
    empty_results,
    fused_activations,
    head_rows,
    make_windows,
    plan_batches,
    reduce_rows,
    score_token_lists,
    store_batch,
)
from lmassay.errors import InputError

if TYPE_CHECKING:
    import torch

    from lmassay.attest.model_loading import LoadedModel

Offload = Literal["none", "stream"]
OFFLOAD_MODES: tuple[str, ...] = ("none", "stream")


@dataclass(frozen=True)
class Family:
    """Where a decoder family keeps its parts, relative to the base model (``model.base_model``)."""

    layers: str
    """The ``ModuleList`` of transformer blocks."""
    final_norm: str
    embeddings: tuple[str, ...]
    """Modules the base forward needs to embed ``input_ids`` (the first pass only)."""
    positions: tuple[str, ...] = ()
    """Modules it needs on every pass (GPT-2 adds learned position embeddings to ``inputs_embeds``)."""


_LLAMA_LIKE = Family(layers="layers", final_norm="norm", embeddings=("embed_tokens",))
FAMILIES: dict[str, Family] = {
    "gpt2": Family(layers="h", final_norm="ln_f", embeddings=("wte", "wpe"), positions=("wpe",)),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gpt_neox": Family(layers="layers", final_norm="final_layer_norm", embeddings=("embed_in",)),
}
"""``config.model_type`` → :class:`Family`, the architectures layer streaming supports."""


@dataclass
class StreamStats:
    """What one streamed scoring did: loads per module, bytes read, time spent where."""

    loads: Counter[str] = field(default_factory=Counter)
    """Times each module (``"model:layers.3"``, ``"model:head"``, …) was materialised."""
    bytes_read: int = 0
    seconds_loading: float = 0.0
    seconds_total: float = 0.0
    activation_bytes: int = 0
    """Peak bytes of kept activations (hidden states of every window), per model pass."""


# --------------------------------------------------------------------------------------------
# checkpoint access


_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


@dataclass(frozen=True)
class _Entry:
    """Where one tensor lies in a safetensors file."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int


def _safetensors_header(file: Path) -> dict[str, _Entry]:
    """The tensors of one safetensors file: 8-byte little-endian header size, JSON header, data."""
    with open(file, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    start = 8 + size
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[key] = _Entry(file, info["dtype"], tuple(info["shape"]), start + begin, start + end)
    return out


class _Checkpoint:
    """The safetensors files of a model folder: which file holds which tensor, and reading one.

    Tensors are read with positioned reads straight into their own memory.  (``safe_open`` maps a
    whole shard into the address space to copy one tensor out of it; under an address-space cap
    the map of a shard holding the embedding table would double the peak.)
    """

    def __init__(self, folder: Path, model_class: str) -> None:
        self.folder = folder
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise InputError(
                f"{folder} has no *.safetensors weights; layer streaming reads safetensors only",
                "convert the checkpoint to safetensors or use --offload none",
            )
        self.entries: dict[str, _Entry] = {}
        for file in files:
            self.entries.update(_safetensors_header(file))
        self.names = {key: key for key in self.entries}
        for pattern, target in _renamings(model_class):  # legacy names, e.g. GPT-NeoX embed_out
            for key in self.entries:
                self.names.setdefault(re.sub(pattern, target, key), key)

    def resolve(self, name: str, prefix: str) -> str | None:
        """The checkpoint key of parameter ``name`` (with or without the base-model prefix)."""
        candidates = [name]
        if prefix and name.startswith(prefix + "."):
            candidates.append(name[len(prefix) + 1 :])
        else:
            candidates.append(f"{prefix}.{name}" if prefix else name)
        return next((self.names[c] for c in candidates if c in self.names), None)

    def read(self, keys: Sequence[str], stats: StreamStats) -> dict[str, torch.Tensor]:
        """Read the tensors ``keys`` (CPU, their stored dtype), one file open at a time."""
        import torch

        by_file: dict[Path, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.entries[key].file, []).append(key)
        out = {}
        start = time.perf_counter()
        for file, names in by_file.items():
            with open(file, "rb", buffering=0) as handle:
                for key in sorted(names, key=lambda k: self.entries[k].begin):
                    entry = self.entries[key]
                    dtype = _SAFETENSORS_DTYPES.get(entry.dtype)
                    if dtype is None:
                        raise InputError(
                            f"{file} stores {key} as {entry.dtype}, which layer streaming cannot read",
                            "use --offload none",
                        )
                    tensor = torch.empty(entry.shape, dtype=getattr(torch, dtype))
                    view = tensor.reshape(-1).view(torch.uint8).numpy().data  # memoryview
                    if view.nbytes != entry.end - entry.begin:
                        raise InputError(
                            f"{file}: tensor {key} has {entry.end - entry.begin} bytes, "
                            f"its shape needs {view.nbytes}",
                            "the checkpoint is damaged; re-save it",
                        )
                    handle.seek(entry.begin)
                    done = 0
                    while done < view.nbytes:
                        n = handle.readinto(view[done:])
                        if not n:
                            raise InputError(f"{file} ends inside tensor {key}", "re-save it")
                        done += n
                    stats.bytes_read += view.nbytes
                    out[key] = tensor
        stats.seconds_loading += time.perf_counter() - start
        return out


def _renamings(model_class: str) -> list[tuple[str, str]]:
    """The plain key renamings transformers applies when loading ``model_class`` checkpoints."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    except ImportError:  # older transformers: checkpoints use the module names
        return []
    out = []
    for rule in get_checkpoint_conversion_mapping(model_class) or []:
        sources, targets = (
            getattr(rule, "source_patterns", []),
            getattr(rule, "target_patterns", []),
        )
        if type(rule).__name__ == "WeightRenaming" and len(sources) == len(targets) == 1:
            out.append((str(sources[0]), str(targets[0])))
    return out


class _StreamedModel:
    """A meta-device model whose modules are materialised from the checkpoint on demand."""

    def __init__(
        self,
        folder: Path,
        role: str,
        device: str,
        dtype: torch.dtype,
        stats: StreamStats,
        trust_remote_code: bool = False,
    ) -> None:
        self.config = _read_config(folder, trust_remote_code)
        self.family = family_of(self.config)
        self.model = build_skeleton(self.config, trust_remote_code)
        self.base = self.model.base_model
        self.prefix = self.model.base_model_prefix
        self.checkpoint = _Checkpoint(folder, type(self.model).__name__)
        self.role, self.device, self.dtype, self.stats = role, device, dtype, stats
        for name, buffer in self.model.named_buffers():  # rotary frequencies etc.: real, small
            if buffer.device.type != "meta":
                _set_tensor(self.model, name, buffer.to(device))

    @property
    def blocks(self) -> Any:
        return getattr(self.base, self.family.layers)

    def _full_name(self, module_path: str) -> str:
        return f"{self.prefix}.{module_path}" if self.prefix else module_path

    def load(self, module_path: str) -> None:
        """Materialise ``base.<module_path>`` (parameters and persistent buffers)."""
        self.install(module_path, self.read(module_path))

    def read(self, module_path: str) -> dict[str, torch.Tensor]:
        """Read the tensors of ``base.<module_path>`` (CPU, stored dtype), by parameter name."""
        module = self.base.get_submodule(module_path)
        keys = {}
        for n, tensor in module.state_dict(keep_vars=True).items():
            full = f"{self._full_name(module_path)}.{n}"
            key = self.checkpoint.resolve(full, self.prefix)
            if key is not None:
                keys[n] = key
            elif tensor.device.type == "meta":
                raise InputError(
                    f"{self.checkpoint.folder} has no tensor {full!r} (the {self.role})",
                    "the checkpoint does not match its config.json; use --offload none",
                )
        tensors = self.checkpoint.read(list(keys.values()), self.stats)
        return {n: tensors[key] for n, key in keys.items()}

    def install(self, module_path: str, tensors: dict[str, torch.Tensor]) -> None:
        """Put tensors read by :meth:`read` into the module (on the device, in the model dtype)."""
        module = self.base.get_submodule(module_path)
        for n in list(tensors):
            _set_tensor(module, n, tensors.pop(n).to(self.device, self.dtype))
        self.stats.loads[f"{self.role}:{module_path}"] += 1

    def free(self, module_path: str) -> None:
        module = self.base.get_submodule(module_path)
        for n, _ in list(module.named_parameters()):
            _set_tensor(module, n, None)

    def head(self) -> Any:
        """The output layer as a real ``nn.Linear`` (its own weights, or the tied embedding)."""
        import torch

        head = self.model.get_output_embeddings()
        if head is None or not isinstance(head, torch.nn.Linear):
            raise InputError(
                f"{type(self.model).__name__} has no linear output layer",
                "use --offload none for this model",
            )
        head_name = next(n for n, m in self.model.named_modules() if m is head)
        wanted = {"weight": f"{head_name}.weight"}
        if head.bias is not None:
            wanted["bias"] = f"{head_name}.bias"
        found = {n: self.checkpoint.resolve(k, self.prefix) for n, k in wanted.items()}
        keys = {n: k for n, k in found.items() if k is not None}
        if "weight" not in keys:  # tied: the output layer is the input embedding
            embedding = self.model.get_input_embeddings()
            emb_name = next(n for n, m in self.model.named_modules() if m is embedding)
            key = self.checkpoint.resolve(f"{emb_name}.weight", self.prefix)
            if key is None or not getattr(self.config, "tie_word_embeddings", True):
                raise InputError(
                    f"{self.checkpoint.folder} has no output layer weights",
                    "the checkpoint does not match its config.json; use --offload none",
                )
            keys["weight"] = key
        tensors = self.checkpoint.read(list(keys.values()), self.stats)
        out = torch.nn.Linear(
            head.in_features, head.out_features, bias=head.bias is not None, device="meta"
        )
        for n, key in keys.items():  # the tensors read become the parameters (no second copy)
            _set_tensor(out, n, tensors.pop(key).to(self.device, self.dtype))
        self.stats.loads[f"{self.role}:head"] += 1
        return out.eval()

    def block_arguments(
        self, inputs: Any, hidden: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple[Any, ...], dict[str, Any]]:
        """Run the base forward up to block 0: its input hidden states, args and kwargs.

        With ``hidden`` None the forward embeds ``inputs.input_ids`` (embeddings must be loaded);
        otherwise it is given ``inputs_embeds=hidden`` and only the arguments are used.
        """
        captured: list[Any] = []

        def stop(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.append((args, kwargs))
            raise _Captured

        handle = self.blocks[0].register_forward_pre_hook(stop, with_kwargs=True)
        mask = inputs.attention_mask.to(self.device)
        try:
            if hidden is None:
                self.base(input_ids=inputs.input_ids.to(self.device), attention_mask=mask)
            else:
                self.base(inputs_embeds=hidden, attention_mask=mask)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise InputError(
                f"{type(self.model).__name__}: could not reach the first block",
                "use --offload none for this model",
            )
        args, kwargs = captured[0]
        return args[0], args[1:], kwargs


class _Captured(Exception):
    """Raised by the pre-hook on block 0 to stop the base forward there."""


def _set_tensor(module: Any, name: str, value: Any) -> None:
    """Put ``value`` (or an empty meta tensor when None) at ``module.<name>``, keeping its kind."""
    import torch

    owner_path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    old = getattr(owner, leaf)
    if value is None:
        value = torch.empty_like(old, device="meta")
    if isinstance(old, torch.nn.Parameter):
        owner._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[leaf] = value


def _read_config(folder: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"could not read the config of {folder} ({type(exc).__name__}: {exc})",
            "pass a transformers model folder with config.json",
        ) from exc


def family_of(config: Any) -> Family:
    """The :class:`Family` of a config, or an :class:`InputError` naming the architecture."""
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(str(model_type))
    architecture = ", ".join(getattr(config, "architectures", None) or [str(model_type)])
    if family is None:
        raise InputError(
            f"layer streaming does not support the {architecture} architecture "
            f"(model_type {model_type!r}); it supports {', '.join(sorted(FAMILIES))}",
            "use --offload none (the model must then fit in memory)",
        )
    layer_types = getattr(config, "layer_types", None)
    if layer_types and len(set(layer_types)) > 1:
        raise InputError(
            f"layer streaming does not support {architecture} with mixed layer types "
            f"({', '.join(sorted(set(layer_types)))})",
            "use --offload none (the model must then fit in memory)",
        )
    return family


def build_skeleton(config: Any, trust_remote_code: bool = False) -> Any:
    """The causal LM of ``config`` with its parameters on the meta device (no memory), in eval mode."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return model.eval()


# --------------------------------------------------------------------------------------------
# scoring


def stream_score_token_lists(
    token_lists: Sequence[Sequence[int]],
    model_path: str | Path,
    reference_path: str | Path | None = None,
    *,
    prefix_token_id: int,
    max_length: int,
    token_budget: int | None = None,
    topk: int = 0,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    trust_remote_code: bool = False,
    progress: ProgressFn | None = None,
    stats: StreamStats | None = None,
) -> list[TokenScores]:
    """Score pre-tokenised texts like :func:`~lmassay.attest.scoring.score_token_lists`, streaming layers.

    ``model_path`` (and ``reference_path``) are local model folders with ``config.json`` and
    safetensors weights.  Each block of each model is loaded once per pass; ``stats`` (if given)
    records the loads, bytes read and timings.  See the module docstring.
    """
    import torch

    check_token_lists(token_lists)
    stats = stats if stats is not None else StreamStats()
    started = time.perf_counter()
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    paths = [Path(model_path)] + ([Path(reference_path)] if reference_path is not None else [])
    roles = ["model", "reference"][: len(paths)]
    streamed = [
        _StreamedModel(p, r, device, torch_dtype, stats, trust_remote_code)
        for p, r in zip(paths, roles, strict=True)
    ]
    widths = [int(s.model.get_output_embeddings().out_features) for s in streamed]
    budget = token_budget or default_token_budget(max(widths), max_length, len(paths), device)
    if budget < 1:
        raise InputError(
            f"token budget must be positive, got {budget}", "pass --token-budget 1 or more"
        )
    windows = make_windows(token_lists, prefix_token_id, max_length)
    batches = plan_batches(windows, budget)
    total = sum(len(t) for t in token_lists)
    steps = _Steps(progress, total * sum(len(s.blocks) + 3 for s in streamed))

    with torch.inference_mode():
        finals = [_final_states(s, batches, steps) for s in streamed]
        heads = [s.head() for s in streamed]
        results = empty_results(token_lists, reference_path is not None, topk)
        for b, batch in enumerate(batches):
            targets = batch_inputs(batch).targets
            sources = [head_rows(final[b], head) for final, head in zip(finals, heads, strict=True)]
            reduced = reduce_rows(sources, targets.to(device), widths, topk, device)
            store_batch(results, batch, reduced)
            steps.advance(int(targets.shape[0]) * len(streamed))
        del heads, finals
    stats.seconds_total += time.perf_counter() - started
    return results


class _Steps:
    """Progress over all block passes: ``done`` token-steps out of ``total``."""

    def __init__(self, progress: ProgressFn | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def advance(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)


def _final_states(
    streamed: _StreamedModel, batches: list[list[Window]], steps: _Steps
) -> list[torch.Tensor]:
    """One model's final-norm hidden states of the scored rows, ``(N_b, H)`` per batch."""
    family = streamed.family
    inputs = [batch_inputs(batch) for batch in batches]
    for name in family.embeddings:
        streamed.load(name)
    hidden = []
    for batch_in in inputs:
        h, _, _ = streamed.block_arguments(batch_in, None)
        hidden.append(h.to("cpu"))  # (B, T, H)
        steps.advance(batch_in.n_rows)
    for name in family.embeddings:
        if name not in family.positions:
            streamed.free(name)
    streamed.stats.activation_bytes = max(
        streamed.stats.activation_bytes, sum(h.numel() * h.element_size() for h in hidden)
    )

    paths = [f"{family.layers}.{index}" for index in range(len(streamed.blocks))]
    # block i+1 is read from disk while block i computes: two blocks' weights at most
    with fused_activations([streamed.model]), ThreadPoolExecutor(1) as reader:
        pending = reader.submit(streamed.read, paths[0])
        for index, path in enumerate(paths):
            tensors = pending.result()
            if index + 1 < len(paths):
                pending = reader.submit(streamed.read, paths[index + 1])
            streamed.install(path, tensors)
            block = streamed.blocks[index]
            for b, batch_in in enumerate(inputs):
                h = hidden[b].to(streamed.device)
                _, args, kwargs = streamed.block_arguments(batch_in, h)
                out = block(h, *args, **kwargs)
                hidden[b] = (out[0] if isinstance(out, tuple) else out).to("cpu")
                steps.advance(batch_in.n_rows)
            streamed.free(path)
            del block

    for name in family.positions:
        streamed.free(name)
    streamed.load(family.final_norm)
    norm = streamed.base.get_submodule(family.final_norm)
    finals = []
    for b, batch_in in enumerate(inputs):
        flat = hidden[b].reshape(-1, hidden[b].shape[-1])  # (B*T, H)
        rows = flat[batch_in.row_index].to(streamed.device)  # (N, H)
        finals.append(norm(rows))
        hidden[b] = flat[:0]  # free as we go
        steps.advance(batch_in.n_rows)
    streamed.free(family.final_norm)
    return finals


# --------------------------------------------------------------------------------------------
# the dispatch used by lmassay attest


def score_models(
    token_lists: Sequence[Sequence[int]],
    model: LoadedModel,
    reference: LoadedModel | None = None,
    *,
    offload: str = "none",
    prefix_token_id: int,
    max_length: int,
    token_budget: int | None = None,
    topk: int = 0,
    progress: ProgressFn | None = None,
) -> list[TokenScores]:
    """Score with loaded models in memory (``offload="none"``) or streamed from their folders."""
    if offload == "stream":
        return stream_score_token_lists(
            token_lists,
            model.path,
            reference.path if reference is not None else None,
            prefix_token_id=prefix_token_id,
            max_length=max_length,
            token_budget=token_budget,
            topk=topk,
            device=model.device,
            dtype=model.dtype,
            trust_remote_code=bool(model.extra.get("trust_remote_code", False)),
            progress=progress,
        )
    if offload != "none":
        raise InputError(f"--offload {offload!r} is not known", "use none or stream")
    return score_token_lists(
        token_lists,
        model.model,
        reference.model if reference is not None else None,
        prefix_token_id=prefix_token_id,
        max_length=max_length,
        token_budget=token_budget,
        topk=topk,
        progress=progress,
    )
