"""Seal and verify: signed manifests of models, datasets and files, and signed attestation statements.

Interoperates with the OpenSSF model signing format through ``model_signing``'s public API: a folder
sealed here verifies with ``model_signing verify key``, and one signed by ``model_signing sign key``
verifies here (file-level detail only).  Modules: :mod:`~lmassay.sealing.manifest` (file and tensor
digests), :mod:`~lmassay.sealing.keys` (P-256 key pairs, fingerprints),
:mod:`~lmassay.sealing.signing` (seal), :mod:`~lmassay.sealing.tensor_statement` (tensor digests
signed beside a seal), :mod:`~lmassay.sealing.statement` (attestation statements),
:mod:`~lmassay.sealing.dsse` (lmassay's own signed statements), :mod:`~lmassay.sealing.verifying`,
:mod:`~lmassay.sealing.registry` (what is known about a model; recording an attest run) and
:mod:`~lmassay.sealing.weight_diff`.  A model is named by one digest,
:func:`lmassay.digests.model_identity`.
"""

from __future__ import annotations

from lmassay.sealing.keys import KeyPair, fingerprint, generate_keypair, public_key_fingerprint
from lmassay.sealing.manifest import FileEntry, Manifest, TensorEntry, build_manifest
from lmassay.sealing.signing import SealResult, default_signature_path, seal
from lmassay.sealing.statement import ATTESTATION_PREDICATE, sign_attestation
from lmassay.sealing.verifying import ManifestDiff, VerifyResult, verify

__all__ = [
    "ATTESTATION_PREDICATE",
    "FileEntry",
    "KeyPair",
    "Manifest",
    "ManifestDiff",
    "SealResult",
    "TensorEntry",
    "VerifyResult",
    "build_manifest",
    "default_signature_path",
    "fingerprint",
    "generate_keypair",
    "public_key_fingerprint",
    "seal",
    "sign_attestation",
    "verify",
]
