"""Sealed probe sets: a probe file (or folder) under an allow-listed root with the signature
``lmassay seal`` writes beside it (``PROBES.sig``; ``FOLDER/model.sig``).  The worker verifies the
seal with the operator's trusted public keys (``lmassay serve --trust-key PUB``) before a job
attests on it, and fails the job with the reason when no trusted key verifies it; the published
result records the verified digest and the key that verified it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay.errors import InputError

__all__ = ["SealedProbes", "probe_signature", "verify_probes"]


@dataclass(frozen=True)
class SealedProbes:
    """A probe set whose seal verified: its signed root digest and the trusted key's fingerprint."""

    digest: str
    signer: str

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "signer": self.signer}


def probe_signature(probes: str) -> Path | None:
    """The signature beside a local probe file or folder, where ``lmassay seal`` writes it; None
    for a built-in suite or a probe set without one."""
    if not probes.startswith("/"):
        return None
    from lmassay.sealing.signing import default_signature_path

    signature = default_signature_path(Path(probes))
    return signature if signature.is_file() else None


def verify_probes(probes: str, trust_keys: Sequence[Path]) -> SealedProbes:
    """Verify the seal beside ``probes`` with each trusted key (the first that verifies wins);
    :class:`InputError` naming why when the set is unsealed or no trusted key verifies it.
    Messages name "the probe set", never the service's paths."""
    from lmassay.sealing.verifying import verify

    signature = probe_signature(probes)
    if signature is None:
        raise InputError(
            "the probe set is not sealed (no signature beside it)",
            "seal it with: lmassay seal PROBES --key KEY",
        )
    if not trust_keys:
        raise InputError(
            "the probe set is sealed but this service trusts no key to verify it",
            "the operator starts lmassay serve with --trust-key PUB",
        )
    reasons = []
    for key in trust_keys:
        result = verify(probes, signature, key)
        if result.valid:
            return SealedProbes(str(result.signed_root), result.signer)
        if result.reason:
            why = result.reason
        elif result.diff is not None and not result.diff.clean:
            why = "the content changed since it was sealed (" + "; ".join(result.diff.lines()) + ")"
        else:
            why = "the content does not match the signed digest"
        reasons.append(f"key {result.signer}: {why}")
    text = "; ".join(reasons).replace(str(Path(probes).parent), "…")
    raise InputError(
        f"the probe set's seal does not verify with any trusted key ({text[:600]})",
        "seal it again with a key the operator trusts",
    )
