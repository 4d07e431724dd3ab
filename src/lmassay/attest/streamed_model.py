"""A model built on the meta device whose modules are read from its checkpoint on demand.

Layer streaming (:mod:`lmassay.attest.streaming`) builds the model of a folder's ``config.json``
with every parameter on the meta device (accelerate's ``init_empty_weights``: no memory; buffers
such as rotary frequencies are real), then materialises one module at a time from the safetensors
files (:class:`~lmassay.attest.checkpoint_reader.Checkpoint`) and frees it again.  Which modules
make the embedding, the blocks and the final norm of each supported architecture is
:data:`FAMILIES`; any other architecture is refused with an :class:`~lmassay.errors.InputError`
naming it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmassay.attest.checkpoint_reader import Checkpoint
from lmassay.errors import InputError

if TYPE_CHECKING:
    import torch


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


class StreamedModel:
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
        self.config = read_config(folder, trust_remote_code)
        self.family = family_of(self.config)
        self.model = build_skeleton(self.config, trust_remote_code)
        self.base = self.model.base_model
        self.prefix = self.model.base_model_prefix
        self.checkpoint = Checkpoint(folder, type(self.model).__name__)
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


def read_config(folder: Path, trust_remote_code: bool) -> Any:
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
