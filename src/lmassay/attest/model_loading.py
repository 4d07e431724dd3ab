"""Load causal language models and their tokenizers safely, and describe them.

Rules (the same for the model under test and the reference):

* A local folder is used as is; anything else is treated as a Hugging Face hub id and resolved to a
  local snapshot first (the cache when it has it; a download only when the hub is reachable).  A hub
  id that is not cached while offline fails at once with a clear message.
* Weights are loaded from ``*.safetensors`` only.  A folder that holds only pickled weights
  (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) is refused unless ``allow_pickle`` is set, because
  unpickling can run arbitrary code.
* ``trust_remote_code`` is off unless asked for.
* How to load (device, dtype, pickles, remote code, hub revision) is one :class:`ModelOptions`,
  shared by the attest, repair and edit configurations and validated before any heavy work.
* The checkpoint's content digest is its one identity: the model_signing manifest root of the
  (resolved) folder, links followed, as ``lmassay seal`` signs it (see
  :func:`lmassay.digests.model_identity`).
"""

from __future__ import annotations

import pickle
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmassay.attest.checkpoint_reader import DAMAGED_FIX, safetensors_entries
from lmassay.attest.model_source import (
    PICKLE_SUFFIXES,
    HubSnapshot,
    check_config,
    check_weights,
    locate_model,
)
from lmassay.choices import DTYPES, Dtype
from lmassay.digests import Digest, digest_entries, digest_file, list_files, model_identity
from lmassay.errors import InputError, ModelLoadError
from lmassay.progress import hidden_library_bars

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEVICES = ("auto", "cpu", "cuda", "mps")
"""Device names; ``cuda:N`` (the N-th visible GPU) is accepted as well."""
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_CUDA_INDEX = re.compile(r"cuda:(\d+)")
ADAPTER_CONFIG = "adapter_config.json"
"""A folder with this file and no config.json is a peft adapter over the base model it names."""
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)
"""The files a tokenizer is read from: their digests make ``tokenizer_digest``."""


@dataclass
class LoadedModel:
    """A model, its tokenizer and what lmassay records about them.

    A model loaded from a folder (or a hub snapshot) has its ``folder`` and that folder's
    ``folder_digest``; a model handed over in memory (:func:`in_memory_model`) has neither, and is
    named instead by ``tensors_digest``, a root over its state dict's tensors.
    """

    name: str
    folder: Path | None
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    folder_digest: Digest | None
    tokenizer_files_digest: Digest | None
    files: list[str]
    device: str
    dtype: str
    max_length: int
    prefix_token_id: int
    extra: dict[str, Any] = field(default_factory=dict)
    hub: HubSnapshot | None = None
    """The hub id, revision and resolved commit, when ``name`` was a hub id."""
    tensors_digest: Digest | None = None
    """In-memory models only: :func:`state_dict_digest` of the model."""

    @property
    def path(self) -> Path:
        """The folder the model was loaded from (an in-memory model has none: an error)."""
        if self.folder is None:
            raise InputError(
                f"model {self.name!r} was passed in memory and has no folder",
                "pass the model's folder or hub id for this step",
            )
        return self.folder

    @property
    def digest(self) -> Digest:
        """The folder's content digest (its model_signing manifest root; none in memory)."""
        if self.folder_digest is None:
            raise InputError(
                f"model {self.name!r} was passed in memory and has no folder digest",
                "pass the model's folder or hub id for this step",
            )
        return self.folder_digest

    @property
    def tokenizer_digest(self) -> Digest:
        """The digest of the tokenizer's files (an in-memory tokenizer has none: an error)."""
        if self.tokenizer_files_digest is None:
            raise InputError(
                f"the tokenizer of {self.name!r} was passed in memory and has no file digest",
                "pass the model's folder or hub id for this step",
            )
        return self.tokenizer_files_digest

    @property
    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def describe(self) -> dict[str, Any]:
        """The JSON description written to ``attestation.json`` (``hub`` only for a hub id,
        ``tensors_digest`` only for a model passed in memory)."""
        described: dict[str, Any] = {
            "name": self.name,
            "path": None if self.folder is None else str(self.folder),
            "digest": None if self.folder_digest is None else self.folder_digest.to_json(),
            "tokenizer_digest": None
            if self.tokenizer_files_digest is None
            else self.tokenizer_files_digest.to_json(),
            "files": self.files,
            "dtype": self.dtype,
            "device": self.device,
            "n_parameters": self.n_parameters,
            "max_length": self.max_length,
            "prefix_token_id": self.prefix_token_id,
            "architecture": type(self.model).__name__,
        }
        if self.hub is not None:
            described["hub"] = self.hub.to_json()
        if self.tensors_digest is not None:
            described["tensors_digest"] = self.tensors_digest.to_json()
        return described


def is_device_name(device: str) -> bool:
    """Whether ``device`` is one of :data:`DEVICES` or ``cuda:N`` (says nothing of availability)."""
    return device in DEVICES or _CUDA_INDEX.fullmatch(device) is not None


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """How models are loaded: the same flags, defaults and checks for attest, repair and edit.

    The command configurations (``AttestConfig``, ``RepairConfig``, ``EditConfig``) inherit these
    fields, so a configuration is also its model options and its resolved form (``provenance.config``
    in ``attestation.json``) stays one flat record.
    """

    device: str = "auto"
    """``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` (the N-th GPU) or ``mps``."""
    dtype: Dtype = "auto"
    """``auto``: float32 on CPU, bfloat16 on GPUs that support it (float16 otherwise and on MPS)."""
    allow_pickle: bool = False
    """Allow pickled weights (``*.bin``): unpickling can run code."""
    trust_remote_code: bool = False
    """Allow the model's own Python code to run."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the hub ids loaded; a local folder ignores it."""

    def validate(self) -> None:
        """Raise :class:`InputError` naming the offending flag; check the device is present."""
        if not is_device_name(self.device):
            raise InputError(f"--device {self.device!r} is not known", f"use {DEVICE_CHOICES}")
        if self.dtype not in DTYPES:
            raise InputError(
                f"--dtype {self.dtype!r} is not known", f"use one of {', '.join(DTYPES)}"
            )
        if self.revision is not None and (
            not self.revision or self.revision != self.revision.strip()
        ):
            raise InputError(
                f"--revision {self.revision!r} is not a revision", "pass a branch, tag or commit"
            )
        resolve_device(self.device)

    @property
    def model_options(self) -> ModelOptions:
        """These options alone (without the fields of a configuration that inherits them)."""
        return ModelOptions(
            device=self.device,
            dtype=self.dtype,
            allow_pickle=self.allow_pickle,
            trust_remote_code=self.trust_remote_code,
            revision=self.revision,
        )

    def load(self, spec: str, *, materialise: bool = True) -> LoadedModel:
        """:func:`load_model` with these options."""
        return load_model(
            spec,
            device=self.device,
            dtype=self.dtype,
            allow_pickle=self.allow_pickle,
            trust_remote_code=self.trust_remote_code,
            revision=self.revision,
            materialise=materialise,
        )


def resolve_device(device: str) -> str:
    """Turn ``auto`` into the best available device; check an explicit one (``cuda:N`` too) exists."""
    import torch

    if not is_device_name(device):
        raise ModelLoadError(f"unknown device {device!r}", f"use {DEVICE_CHOICES}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"--device {device} was asked for but no CUDA GPU is visible",
            "use --device cpu or auto",
        )
    index = _CUDA_INDEX.fullmatch(device)
    if index is not None and int(index.group(1)) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ModelLoadError(
            f"--device {device} was asked for but {count} CUDA GPU(s) are visible",
            f"use --device cuda:0 to cuda:{count - 1}, cuda or auto",
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(
            "--device mps was asked for but MPS is not available", "use --device cpu or auto"
        )
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """Turn ``auto`` into float32 on CPU, bfloat16 on GPUs that support it, float16 otherwise."""
    import torch

    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "mps":
            return torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def context_length(config: Any, tokenizer: Any) -> int:
    """The model's context length, following lm-evaluation-harness ``HFLM.max_length``."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000_000:
        return tok_max
    return 2048


def prefix_token(tokenizer: Any, name: str) -> int:
    """The token every text is conditioned on first: BOS if the tokenizer has one, else EOS."""
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    raise ModelLoadError(
        f"the tokenizer of {name!r} has neither a BOS nor an EOS token to start texts with",
        "use a tokenizer with bos_token or eos_token set",
    )


def load_model(
    spec: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    revision: str | None = None,
    materialise: bool = True,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a local folder or a hub id.

    With ``materialise=False`` (layer streaming, :mod:`lmassay.attest.streaming`) the weights are not
    read: ``model`` is the architecture on the meta device (parameter shapes only, no memory),
    and the folder must hold safetensors.  Digests and the pickle refusal are the same.

    Raises :class:`~lmassay.errors.ModelLoadError` (a one-line, user-facing error) for every
    problem with the input.
    """
    resolved_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, resolved_device)
    source = locate_model(spec, revision=revision, allow_pickle=allow_pickle)
    path = source.path
    if (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
        return _load_adapter(
            spec,
            path,
            hub=source.hub,
            device=device,
            dtype=dtype,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            materialise=materialise,
        )
    has_safetensors = check_weights(path, list_files(path), allow_pickle)
    check_config(path)
    identity = model_identity(path)  # one hashing pass: the digest and the tokenizer's
    files, digest = identity.names, identity.root
    tokenizer_digest = digest_entries(
        [(r, d) for r, d in identity.files if Path(r).name in TOKENIZER_FILES]
    )

    tokenizer = _load_tokenizer(spec, path, trust_remote_code)
    if not materialise and not has_safetensors:
        raise ModelLoadError(
            f"model {spec!r} has no safetensors weights, which layer streaming reads",
            "convert the checkpoint to safetensors, or use --offload none",
        )
    for name in files:  # every header checked (and a file cut short named) before any loader
        if name.endswith(".safetensors"):
            safetensors_entries(path / name)
    pickles = [] if has_safetensors else [n for n in files if _is_weights_pickle(n)]
    model = _load_weights(spec, path, torch_dtype, pickles, trust_remote_code, materialise)
    _check_vocabulary_fits(path, tokenizer, model)
    if materialise:
        model.to(resolved_device)  # type: ignore[arg-type]  # transformers types .to() narrowly
    model.eval()
    return LoadedModel(
        name=spec,
        folder=path,
        model=model,
        tokenizer=tokenizer,
        folder_digest=digest,
        tokenizer_files_digest=tokenizer_digest,
        files=files,
        device=resolved_device,
        dtype=str(torch_dtype).removeprefix("torch."),
        max_length=context_length(model.config, tokenizer),
        prefix_token_id=prefix_token(tokenizer, spec),
        extra={"materialised": materialise, "trust_remote_code": trust_remote_code},
        hub=source.hub,
    )


def state_dict_digest(model: PreTrainedModel) -> Digest:
    """A root digest over the model's state dict: SHA-256 of each tensor's bytes (as stored in
    memory, native byte order), rooted with :func:`~lmassay.digests.digest_entries` over the
    sorted ``(name, digest)`` pairs, every state-dict entry included (tied tensors under each
    of their names).  The per-tensor SHA-256 is what ``lmassay seal`` records per tensor of a
    ``.safetensors`` file, so a tensor can be matched to a sealed one of the same dtype."""
    import hashlib

    import torch

    entries = []
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)  # (N,)
        raw = flat.view(torch.uint8).numpy()  # (N * itemsize,)
        entries.append((name, Digest("sha256", hashlib.sha256(raw.tobytes()).hexdigest())))
    return digest_entries(entries)


def in_memory_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str
) -> LoadedModel:
    """A model and tokenizer already loaded (a notebook's objects), described for an attestation.

    The model is scored where it is (its device and dtype) and put in eval mode; no folder and no
    folder digest are recorded (none was hashed): its identity is :func:`state_dict_digest`.
    """
    parameter = next(iter(model.parameters()), None)
    if parameter is None:
        raise InputError(f"model {name!r} has no parameters", "pass a causal language model")
    rows = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[index]  # (V, D)
    if len(tokenizer) > rows:
        raise InputError(
            f"the tokenizer given with {name!r} has {len(tokenizer)} tokens but the model's "
            f"input embedding has {rows} rows",
            "pass the tokenizer the model was trained with",
        )
    model.eval()
    return LoadedModel(
        name=name,
        folder=None,
        model=model,
        tokenizer=tokenizer,
        folder_digest=None,
        tokenizer_files_digest=None,
        files=[],
        device=str(parameter.device),
        dtype=str(parameter.dtype).removeprefix("torch."),
        max_length=context_length(model.config, tokenizer),
        prefix_token_id=prefix_token(tokenizer, name),
        extra={"materialised": True, "in_memory": True},
        tensors_digest=state_dict_digest(model),
    )


def _load_tokenizer(spec: str, path: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"could not load the tokenizer of {spec!r} ({type(exc).__name__}: {exc})",
            "the folder needs tokenizer files (tokenizer.json or vocab/merges); pass --trust-remote-code only if it needs custom code and you trust it",
        ) from exc


_UNPICKLING_ERRORS: tuple[type[Exception], ...] = (
    pickle.UnpicklingError,
    EOFError,
    IndexError,  # damaged bytes trip the unpickler's stack machine wherever they happen to
    TypeError,
    AttributeError,
    struct.error,
    OverflowError,
)
"""What ``torch.load`` raises on a damaged pickle besides OSError, ValueError, KeyError and
RuntimeError (a zip archive cut short): caught only when pickled weights were loaded."""


def _load_weights(
    spec: str,
    path: Path,
    torch_dtype: torch.dtype,
    pickles: list[str],
    trust_remote_code: bool,
    materialise: bool,
) -> PreTrainedModel:
    """The model's weights (safetensors, or the ``pickles`` when there are none), or with
    ``materialise=False`` its meta skeleton."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        if not materialise:
            return _meta_model(path, trust_remote_code)
        with hidden_library_bars():
            model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=torch_dtype,
                use_safetensors=None if pickles else True,
                trust_remote_code=trust_remote_code,
            )
        return model
    except SafetensorError as exc:  # the headers were checked; a damaged data section remains
        raise ModelLoadError(
            f"the safetensors weights in {path} cannot be read ({exc})", DAMAGED_FIX
        ) from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise _weights_error(spec, path, pickles, exc) from exc
    except _UNPICKLING_ERRORS as exc:
        if not pickles:
            raise  # nothing was unpickled: a fault, not a damaged input
        raise _weights_error(spec, path, pickles, exc) from exc


def _weights_error(spec: str, path: Path, pickles: list[str], exc: Exception) -> ModelLoadError:
    """The error of weights that do not load: with allowed ``pickles``, most likely a damaged
    file (named, with the library's whole message)."""
    detail = f"{type(exc).__name__}: {exc}"
    if pickles:
        named = ", ".join(str(path / name) for name in pickles)
        return ModelLoadError(
            f"the pickled weights {named} cannot be loaded ({detail})",
            "check that the file is complete (download or save it again), "
            "or convert the checkpoint to safetensors",
        )
    return ModelLoadError(
        f"could not load model {spec!r} ({detail})",
        "pass --trust-remote-code if the model needs its own code and you trust it",
    )


def _is_weights_pickle(name: str) -> bool:
    """Whether the file ``name`` holds pickled weights (``training_args.bin`` does not)."""
    return name.endswith(PICKLE_SUFFIXES) and not Path(name).name.startswith("training_args")


def _check_vocabulary_fits(
    path: Path, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel
) -> None:
    """Refuse a tokenizer with more ids than the model's input embedding has rows: scoring would
    index past the embedding table (an ``IndexError`` mid-run) on the first text using one."""
    try:
        embedding = model.get_input_embeddings()
    except NotImplementedError:  # a model without a plain embedding table
        return
    weight = getattr(embedding, "weight", None)
    if weight is None:
        return
    rows = int(weight.shape[0])  # (V, D)
    size = len(tokenizer)
    if size > rows:
        raise ModelLoadError(
            f"the tokenizer in {path} has {size} tokens but the model's input embedding "
            f"({path / 'config.json'}, vocab_size) has only {rows} rows: token ids "
            f"{rows}-{size - 1} would index past it",
            "pair the model with the tokenizer it was trained with",
        )


def _adapter_base(spec: str, path: Path) -> str:
    """The base model an adapter folder's ``adapter_config.json`` names."""
    import json

    try:
        adapter = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path / ADAPTER_CONFIG} cannot be read ({exc})", "save the adapter again"
        ) from exc
    base_spec = adapter.get("base_model_name_or_path") if isinstance(adapter, dict) else None
    if not isinstance(base_spec, str) or not base_spec:
        raise ModelLoadError(
            f"the adapter {spec!r} names no base model (base_model_name_or_path)",
            "set base_model_name_or_path in its adapter_config.json",
        )
    return base_spec


def _check_adapter_weights(spec: str, files: list[str], allow_pickle: bool) -> None:
    if any(f.endswith(".safetensors") for f in files):
        return
    pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if not pickled:
        raise ModelLoadError(
            f"the adapter {spec!r} holds no weights", "pass a complete adapter folder"
        )
    if not allow_pickle:
        raise ModelLoadError(
            f"the adapter {spec!r} has only pickled weights ({pickled[0]}); unpickling can run code",
            "convert it to safetensors, or pass --allow-pickle if you trust its source",
        )


def _load_adapter(
    spec: str,
    path: Path,
    *,
    hub: HubSnapshot | None,
    device: str,
    dtype: str,
    allow_pickle: bool,
    trust_remote_code: bool,
    materialise: bool,
) -> LoadedModel:
    """A peft LoRA adapter folder: load its base model, apply the adapter and merge it.

    The digest covers the adapter's files and the base model's digest.
    """
    if not materialise:
        raise ModelLoadError(
            f"{spec!r} is a LoRA adapter, which layer streaming cannot read",
            "use --offload none, or save the merged model (lmassay repair without --save-adapter)",
        )
    base_spec = _adapter_base(spec, path)
    files = list_files(path)
    _check_adapter_weights(spec, files, allow_pickle)
    base = load_model(
        base_spec,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    from peft import PeftModel

    try:
        with hidden_library_bars():
            model = PeftModel.from_pretrained(base.model, path).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            f"could not apply the adapter {spec!r} to {base_spec!r} ({type(exc).__name__}: {exc})",
            "check that the adapter was trained on that base model",
        ) from exc
    model.eval()
    entries = [(f"adapter/{rel}", digest_file(path / rel)) for rel in files]
    return LoadedModel(
        name=spec,
        folder=path,
        model=model,
        tokenizer=base.tokenizer,
        folder_digest=digest_entries([*entries, ("base", base.digest)]),
        tokenizer_files_digest=base.tokenizer_files_digest,
        files=files,
        device=base.device,
        dtype=base.dtype,
        max_length=base.max_length,
        prefix_token_id=base.prefix_token_id,
        extra={**base.extra, "adapter_of": {"name": base_spec, "digest": base.digest.to_json()}},
        hub=hub,
    )


def _meta_model(path: Path, trust_remote_code: bool) -> PreTrainedModel:
    """The model of ``path``'s config with its parameters on the meta device (no weights read)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    model.tie_weights()  # as from_pretrained does, so shared tensors are counted once
    return model


def same_tokenizer(a: LoadedModel, b: LoadedModel) -> bool:
    """Whether two models share a tokenizer: the same vocabulary (token → id) and prefix token."""
    if a.prefix_token_id != b.prefix_token_id:
        return False
    return bool(a.tokenizer.get_vocab() == b.tokenizer.get_vocab())
