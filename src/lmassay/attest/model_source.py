"""Where a model's files come from, and whether they may be loaded.

A local folder is used as is; anything else is a Hugging Face hub id, resolved to a local snapshot
(the cache first, a download only when the hub answers). Weights must be safetensors unless pickles
are explicitly allowed, because unpickling can run code.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from lmassay.errors import ModelLoadError

__all__ = ["PICKLE_SUFFIXES", "check_config", "check_weights", "resolve_model_path"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.py", "*.md"]


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint answers a TCP connection within ``timeout`` seconds."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    parsed = urlparse(constants.ENDPOINT)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model_path(
    spec: str, *, revision: str | None = None, allow_pickle: bool = False
) -> Path:
    """A local folder for ``spec``: the folder itself, or a hub snapshot (cache first)."""
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(
                f"model path {spec!r} is a file, not a folder",
                "pass the folder that holds config.json and the weights",
            )
        return local
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace(
        "/", "", 1
    )
    if looks_like_path or spec.count("/") > 1:
        raise ModelLoadError(f"model folder {spec!r} does not exist", "check the path")

    from huggingface_hub import snapshot_download

    patterns = [*_HUB_PATTERNS, *(["*.bin", "*.pt"] if allow_pickle else [])]
    try:
        return Path(
            snapshot_download(
                spec, revision=revision, allow_patterns=patterns, local_files_only=True
            )
        )
    except Exception as exc:
        cached_error = exc
    if not _hub_reachable():
        raise ModelLoadError(
            f"model {spec!r} is neither a local folder nor in the Hugging Face cache, and the hub "
            f"cannot be reached (offline)",
            "pass a local model folder, or download it first where the hub is reachable "
            "(huggingface-cli download ID)",
        ) from cached_error
    try:
        return Path(snapshot_download(spec, revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise ModelLoadError(
            f"could not download model {spec!r} from the hub ({type(exc).__name__}: {exc})",
            "check the id, your network and HF_TOKEN for gated models",
        ) from exc


def check_weights(path: Path, files: list[str], allow_pickle: bool) -> bool:
    """Refuse unusable weights; return whether the folder has safetensors."""
    names = [Path(f).name for f in files]
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    pickles = [
        f for f in files if f.endswith(PICKLE_SUFFIXES) and not f.startswith("training_args")
    ]
    if "config.json" not in names:
        raise ModelLoadError(
            f"model folder {str(path)!r} has no config.json", "pass a transformers model folder"
        )
    if not has_safetensors and pickles and not allow_pickle:
        raise ModelLoadError(
            f"model {str(path)!r} has only pickled weights ({pickles[0]}); unpickling can run code",
            "convert the checkpoint to safetensors, or pass --allow-pickle if you trust its source",
        )
    if not has_safetensors and not pickles:
        raise ModelLoadError(
            f"model folder {str(path)!r} holds no weights (*.safetensors)",
            "pass a complete model folder",
        )
    return has_safetensors


def check_config(path: Path) -> None:
    """Refuse a ``config.json`` that is not a JSON object, naming it (before the tokenizer, which
    reads it too and would otherwise be blamed)."""
    config = path / "config.json"
    try:
        document = json.loads(config.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelLoadError(
            f"the model's config {config} is not valid JSON ({exc})",
            "restore config.json (download or save the model again)",
        ) from exc
    if not isinstance(document, dict):
        raise ModelLoadError(
            f"the model's config {config} is not a JSON object",
            "restore config.json (download or save the model again)",
        )
