"""Where a model's files come from, and whether they may be loaded.

A local folder is used as is; anything else is a Hugging Face hub id, resolved to a local snapshot
(the cache first, a download only when the hub answers). Weights must be safetensors unless pickles
are explicitly allowed, because unpickling can run code.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lmassay.errors import ModelLoadError

__all__ = [
    "PICKLE_SUFFIXES",
    "HubSnapshot",
    "ModelSource",
    "check_config",
    "check_weights",
    "locate_model",
    "locate_target",
    "resolve_model_path",
]

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


_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubSnapshot:
    """A hub model id resolved to a snapshot: the id, the revision asked for and its commit."""

    id: str
    revision: str | None
    """As asked (``--revision``: a branch, tag or commit); None: the repository's default branch."""
    commit: str
    """The commit hash the snapshot holds (huggingface_hub's ``snapshots/COMMIT`` folder)."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "revision": self.revision, "commit": self.commit}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a local folder, and the hub snapshot it is (None: not a hub id)."""

    path: Path
    hub: HubSnapshot | None = None


def is_hub_id(spec: str) -> bool:
    """Whether ``spec`` (not an existing path) has the form of a hub id (``NAME`` or ``ORG/NAME``)."""
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace(
        "/", "", 1
    )
    return bool(spec) and not looks_like_path and spec.count("/") <= 1


def locate_model(
    spec: str, *, revision: str | None = None, allow_pickle: bool = False, what: str = "model"
) -> ModelSource:
    """The local folder of ``spec`` (a folder, used as is; or a hub id, resolved to its snapshot:
    the cache first, a download only when the hub answers) and, for a hub id, the commit.

    ``revision`` (a branch, tag or commit) applies to hub ids; a local folder ignores it.
    """
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(
                f"{what} path {spec!r} is a file, not a folder",
                "pass the folder that holds config.json and the weights",
            )
        return ModelSource(local)
    if not is_hub_id(spec):
        raise ModelLoadError(f"{what} folder {spec!r} does not exist", "check the path")
    path = _snapshot(spec, revision, allow_pickle, what)
    return ModelSource(path, _hub_snapshot(spec, revision, path))


def locate_target(spec: str, *, revision: str | None = None, what: str) -> ModelSource:
    """What ``seal``, ``verify`` and ``diff`` read: an existing file or folder as is, a hub id
    resolved to its snapshot as :func:`locate_model` does, anything else as a path (whose own
    "does not exist" error follows)."""
    local = Path(spec).expanduser()
    if local.exists() or not is_hub_id(spec):
        if revision is not None:
            raise ModelLoadError(
                f"--revision {revision} was given for {what} {spec!r}, which is a path",
                "drop --revision, or give a hub id",
            )
        return ModelSource(local)
    path = _snapshot(spec, revision, False, what)
    return ModelSource(path, _hub_snapshot(spec, revision, path))


def resolve_model_path(
    spec: str, *, revision: str | None = None, allow_pickle: bool = False
) -> Path:
    """A local folder for ``spec``: the folder itself, or a hub snapshot (cache first)."""
    return locate_model(spec, revision=revision, allow_pickle=allow_pickle).path


def _hub_snapshot(spec: str, revision: str | None, path: Path) -> HubSnapshot:
    """The snapshot record of ``path``, which huggingface_hub names by its commit."""
    commit = path.resolve().name
    if _COMMIT.fullmatch(commit) is None:
        raise ModelLoadError(
            f"the hub snapshot of {spec!r} at {path} is not named by a commit hash",
            "use huggingface_hub's cache (HF_HUB_CACHE), not a local_dir download",
        )
    return HubSnapshot(spec, revision, commit)


def _snapshot(spec: str, revision: str | None, allow_pickle: bool, what: str) -> Path:
    """The snapshot folder of hub id ``spec`` (huggingface_hub's own download bars show)."""
    from huggingface_hub import snapshot_download

    at = f" at revision {revision!r}" if revision else ""
    patterns = [*_HUB_PATTERNS, *(["*.bin", "*.pt"] if allow_pickle else [])]
    try:
        return Path(
            snapshot_download(
                spec, revision=revision, allow_patterns=patterns, local_files_only=True
            )
        )
    except Exception as exc:  # huggingface_hub's errors share no base class worth naming
        cached_error = exc
    if not _hub_reachable():
        download = f"hf download {spec}" + (f" --revision {revision}" if revision else "")
        raise ModelLoadError(
            f"{what} {spec!r}{at} is neither a local folder nor in the Hugging Face cache, and "
            f"the hub cannot be reached (offline)",
            f"pass a local model folder, or download it first where the hub is reachable "
            f"({download})",
        ) from cached_error
    try:
        return Path(snapshot_download(spec, revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise ModelLoadError(
            f"could not download {what} {spec!r}{at} from the hub ({type(exc).__name__}: {exc})",
            "check the id, the revision, your network and HF_TOKEN for gated models",
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
