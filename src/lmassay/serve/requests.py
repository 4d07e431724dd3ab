"""What a client may ask the service for: the request body, checked once, before anything is queued.

A model or reference is a Hugging Face hub id (``NAME`` or ``ORG/NAME``: letters, digits, ``._-``,
no ``..``) with an optional revision, or — only under a folder the operator allow-listed with
``--allow-local-root`` — an absolute path to a local model folder, or ``registered:NAME``: a model
the operator registered (``lmassay serve model add``), resolved here to the operator's folder or
hub id and revision (a hub id never holds ``:``, so the two cannot be confused; a registered
folder needs no allow-listed root).  Probes are a built-in suite
(``builtin:NAME``) or a probe file or folder under an allow-listed root; one with a seal beside it
(``lmassay seal``) is verified with the service's trusted keys before the job runs
(:mod:`lmassay.serve.sealed`), and ``options.sealed`` requires one.  Nothing else names a
server-side path.  ``trust_remote_code`` and pickled weights are refused whatever the request says
(a request that asks for them is answered 422), and the job runs with both off.  Unknown fields
anywhere are refused (422).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lmassay.choices import Comparison, Dtype
from lmassay.errors import InputError
from lmassay.provenance import utc_now
from lmassay.serve.store import RegisteredModel

__all__ = [
    "AttestationRequest",
    "JobOptions",
    "RequestRefused",
    "attest_config",
    "check_request",
    "registered_model",
    "registered_names",
]

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")
BUILTIN = re.compile(r"builtin:([a-z0-9][a-z0-9_-]{0,63})")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SERVICE_OPTIONS = frozenset({"sealed"})
"""Options the service itself acts on (not attest settings)."""
REGISTERED_PREFIX = "registered:"
REGISTERED_KEY = "registered"
"""The key of a stored job's request that keeps the registered names it was submitted with."""
_SPEC_LENGTH = 1024

Lookup = Callable[[str], RegisteredModel | None]
"""A registered model by name (``JobStore.model``), None when there is none."""


class RequestRefused(ValueError):
    """A request the service will not queue; the message says which field and why."""


class JobOptions(BaseModel):
    """The attestation settings a client may choose (each an :class:`AttestConfig` field)."""

    model_config = ConfigDict(extra="forbid")

    revision: str | None = Field(
        default=None, description="Hub revision (branch, tag or commit) of model."
    )
    reference_revision: str | None = Field(
        default=None, description="Hub revision of the reference."
    )
    per_category: int | None = Field(default=None, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    max_length: int | None = Field(default=None, ge=8, le=32_768)
    comparison: Comparison = "auto"
    dtype: Dtype = "auto"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    noise_floor: float | None = Field(default=None, ge=0, le=1e6)
    spread_multiple: float = Field(default=3.0, ge=0, le=1e6)
    sparse_floor: float | None = Field(default=None, ge=0, le=1e6)
    answer_floor: float | None = Field(default=None, ge=0, le=1e6)
    n_bootstrap: int = Field(default=1000, ge=1, le=100_000)
    n_permutations: int = Field(default=999, ge=0, le=100_000)
    min_samples: int = Field(default=5, ge=2, le=100_000)
    sealed: bool = Field(
        default=False,
        description="Require a sealed probe set: a probe file with the signature lmassay seal "
        "writes beside it, verified with the service's trusted keys before the job runs.",
    )
    chat_template: bool = False
    self_probe: int = Field(default=0, ge=0, le=256)
    trust_remote_code: bool = Field(default=False, description="Refused when true: never run here.")
    allow_pickle: bool = Field(
        default=False, description="Refused when true: never unpickled here."
    )

    @field_validator("revision", "reference_revision")
    @classmethod
    def _revision(cls, value: str | None) -> str | None:
        if value is not None and (not REVISION.fullmatch(value) or ".." in value):
            raise ValueError("not a revision (a branch, tag or commit)")
        return value

    @field_validator("trust_remote_code")
    @classmethod
    def _no_remote_code(cls, value: bool) -> bool:
        if value:
            raise ValueError("trust_remote_code is refused on this service (no model code runs)")
        return value

    @field_validator("allow_pickle")
    @classmethod
    def _no_pickle(cls, value: bool) -> bool:
        if value:
            raise ValueError("pickled weights are refused on this service (safetensors only)")
        return value


class AttestationRequest(BaseModel):
    """``POST /v1/attestations``: the model, its reference, the probes and the options."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=_SPEC_LENGTH, description="Hub id or path.")
    reference: str | None = Field(default=None, min_length=1, max_length=_SPEC_LENGTH)
    probes: str = Field(
        default="builtin:offline",
        min_length=1,
        max_length=_SPEC_LENGTH,
        description="builtin:NAME, or a probe file under an allow-listed root.",
    )
    options: JobOptions = Field(default_factory=JobOptions)


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def check_local(spec: str, roots: Sequence[Path], field_name: str, *, folder: bool) -> str:
    """An absolute path under an allow-listed root (links resolved first); its resolved form."""
    if not roots:
        raise RequestRefused(
            f"{field_name}: local paths are not accepted by this service "
            "(give a hub id, or builtin:NAME for probes)"
        )
    if not os.path.isabs(spec) or "\x00" in spec:
        raise RequestRefused(f"{field_name}: a local path must be absolute")
    resolved = Path(os.path.realpath(spec))
    if not _under(resolved, roots):
        raise RequestRefused(f"{field_name}: {spec!r} is not under an allow-listed root")
    if folder and not resolved.is_dir():
        raise RequestRefused(f"{field_name}: {spec!r} is not a model folder on this service")
    if not folder and not resolved.exists():
        raise RequestRefused(f"{field_name}: {spec!r} does not exist on this service")
    return str(resolved)


def check_model_spec(spec: str, roots: Sequence[Path], field_name: str) -> str:
    """A hub id as given, or an allow-listed local model folder (resolved)."""
    if spec.startswith("/"):
        return check_local(spec, roots, field_name, folder=True)
    if not HUB_ID.fullmatch(spec) or ".." in spec or spec.startswith(("-", ".")):
        raise RequestRefused(
            f"{field_name}: {spec[:100]!r} is not a hub id (ORG/NAME: letters, digits, '.', '_', "
            "'-'; no '..')" + (" or an absolute local path" if roots else "")
        )
    return spec


def check_probes_spec(spec: str, roots: Sequence[Path], known_suites: Sequence[str]) -> str:
    """``builtin:NAME`` of a shipped suite, or an allow-listed probe file or folder."""
    match = BUILTIN.fullmatch(spec)
    if match:
        if match.group(1) not in known_suites:
            raise RequestRefused(
                f"probes: there is no built-in suite {match.group(1)!r} "
                f"(use one of {', '.join(known_suites)})"
            )
        return spec
    if spec.startswith("/"):
        return check_local(spec, roots, "probes", folder=False)
    raise RequestRefused(
        "probes: give builtin:NAME"
        + (" or an absolute path under an allow-listed root" if roots else "")
    )


def registered_model(name: str, source: str, revision: str | None = None) -> RegisteredModel:
    """What ``lmassay serve model add NAME SOURCE [--revision R]`` registers: an existing local
    folder (made absolute, links resolved; no revision) or a hub id; checked here."""
    if not MODEL_NAME.fullmatch(name):
        raise InputError(
            f"NAME {name!r} is not a model name",
            "use letters, digits, '.', '_' and '-' (at most 64; no '/' or ':')",
        )
    if revision is not None and (not REVISION.fullmatch(revision) or ".." in revision):
        raise InputError(
            f"--revision {revision!r} is not a revision", "give a branch, tag or commit"
        )
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir():
            raise InputError(
                f"PATH_OR_HUB_ID {source!r} is a file", "give the model's folder (config.json)"
            )
        if revision is not None:
            raise InputError(
                f"--revision was given for the local folder {source!r}", "drop --revision"
            )
        return RegisteredModel(name, os.path.realpath(local), None, utc_now())
    if source.startswith(("/", ".", "~")) or not HUB_ID.fullmatch(source) or ".." in source:
        raise InputError(
            f"PATH_OR_HUB_ID {source!r} is neither an existing folder nor a hub id",
            "give the model's folder or ORG/NAME",
        )
    return RegisteredModel(name, source, revision, utc_now())


def registered_names(request: AttestationRequest) -> dict[str, str]:
    """``{"model": NAME, "reference": NAME}`` for the fields that name a registered model."""
    names = {}
    for field_name, spec in (("model", request.model), ("reference", request.reference)):
        if spec is not None and spec.startswith(REGISTERED_PREFIX):
            names[field_name] = spec[len(REGISTERED_PREFIX) :]
    return names


def _registered(spec: str | None, lookup: Lookup | None, field_name: str) -> RegisteredModel | None:
    """The registered model ``spec`` names (``registered:NAME``), None for any other spec."""
    if spec is None or not spec.startswith(REGISTERED_PREFIX):
        return None
    name = spec[len(REGISTERED_PREFIX) :]
    if not MODEL_NAME.fullmatch(name):
        raise RequestRefused(f"{field_name}: {spec[:100]!r} is not registered:NAME")
    found = None if lookup is None else lookup(name)
    if found is None:
        raise RequestRefused(f"{field_name}: no model named {name!r} is registered on this service")
    if found.local and not os.path.isdir(found.source):
        raise RequestRefused(
            f"{field_name}: the registered model {name!r} is not available on this service"
        )
    return found


def _check_seal(probes: str, sealed: bool, trusts_keys: bool) -> None:
    """A sealed probe set needs a trusted key here; ``options.sealed`` needs a sealed set."""
    from lmassay.serve.sealed import probe_signature

    signature = probe_signature(probes)
    if sealed and not probes.startswith("/"):
        raise RequestRefused("options.sealed: a built-in suite is not a sealed probe set")
    if sealed and signature is None:
        raise RequestRefused(
            "options.sealed: the probe set has no signature beside it (lmassay seal PROBES "
            "writes PROBES.sig)"
        )
    if signature is not None and not trusts_keys:
        raise RequestRefused(
            "probes: the probe set is sealed but this service trusts no key to verify it "
            "(the operator's --trust-key)"
        )


def check_request(
    request: AttestationRequest,
    roots: Sequence[Path],
    known_suites: Sequence[str],
    lookup: Lookup | None = None,
    *,
    trusts_keys: bool = False,
) -> AttestationRequest:
    """The request with its model, reference and probes checked (local paths resolved, a
    ``registered:NAME`` replaced by the operator's folder or hub id and revision)."""
    options = request.options
    registered = _registered(request.model, lookup, "model")
    registered_reference = _registered(request.reference, lookup, "reference")
    for found, field_name in (
        (registered, "revision"),
        (registered_reference, "reference_revision"),
    ):
        if found is not None and getattr(options, field_name) is not None:
            raise RequestRefused(
                f"options.{field_name}: the registered model {found.name!r} has the "
                "operator's revision (drop this option)"
            )
    if registered is not None:
        model = registered.source
        options = options.model_copy(update={"revision": registered.revision})
    else:
        model = check_model_spec(request.model, roots, "model")
    if registered_reference is not None:
        reference: str | None = registered_reference.source
        options = options.model_copy(update={"reference_revision": registered_reference.revision})
    elif request.reference is not None:
        reference = check_model_spec(request.reference, roots, "reference")
    else:
        reference = None
    probes = check_probes_spec(request.probes, roots, known_suites)
    _check_seal(probes, options.sealed, trusts_keys)
    if options.revision is not None and model.startswith("/"):
        raise RequestRefused("options.revision: a local model folder has no revision")
    if options.reference_revision is not None and (reference is None or reference.startswith("/")):
        raise RequestRefused("options.reference_revision: needs a hub-id reference")
    return request.model_copy(
        update={"model": model, "reference": reference, "probes": probes, "options": options}
    )


def builtin_suite_names() -> list[str]:
    from lmassay.attest.suites import builtin_suites

    return [suite.name for suite in builtin_suites()]


def attest_config(request: AttestationRequest, out: str, ray: str | None = None) -> Any:
    """The :class:`~lmassay.attest.config.AttestConfig` a job runs (remote code and pickles off,
    whatever the request said; ``ray``: the service's ``--ray``), validated."""
    import dataclasses

    from lmassay.attest.config import AttestConfig

    options = request.options.model_dump(
        exclude={"trust_remote_code", "allow_pickle", *SERVICE_OPTIONS}
    )
    extra: dict[str, Any] = {}
    if ray is not None:
        if "ray" not in {f.name for f in dataclasses.fields(AttestConfig)}:
            from lmassay.errors import InputError

            raise InputError(
                "--ray: this lmassay has no Ray scoring (AttestConfig.ray)",
                "run lmassay serve with --workers N instead",
            )
        extra["ray"] = ray
    config = AttestConfig(
        model=request.model,
        reference=request.reference,
        probes=request.probes,
        out=out,
        trust_remote_code=False,
        allow_pickle=False,
        **options,
        **extra,
    )
    config.validate()
    return config
