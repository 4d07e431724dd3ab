"""lmassay's own signed statements: in-toto statements in DSSE envelopes inside Sigstore bundles.

model_signing's public API signs exactly one kind of statement (a manifest of a folder), so the two
statements lmassay adds — the attestation statement (:mod:`~lmassay.sealing.statement`) and the
tensor statement beside a seal (:mod:`~lmassay.sealing.tensor_statement`) — are signed here with
the ``cryptography`` package's public ECDSA API, in the same file format as a model_signing seal:

* a Sigstore bundle, media type ``application/vnd.dev.sigstore.bundle.v0.3+json``, whose
  verification material names the key by a hint (SHA-256 of the public key's PEM text, as
  model_signing writes it);
* a DSSE envelope (https://github.com/secure-systems-lab/dsse, protocol v1.0): the signature is
  ECDSA (SHA-256 for P-256) over ``PAE(payloadType, payload)``;
* the payload: an in-toto v1 statement (``application/vnd.in-toto+json``).

:func:`read_bundle` also reads model_signing's own bundles; :func:`signature_problem` is used to
say *why* such a bundle failed model_signing's verifier (a bad signature, or changed content).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay.bounded_read import DOCUMENT_LIMIT, read_bytes
from lmassay.digests import Digest
from lmassay.errors import InputError
from lmassay.sealing.keys import load_private_key, load_public_key

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"
_NOT_A_BUNDLE = "give a signature written by lmassay seal or model_signing sign key"


@dataclass(frozen=True)
class Bundle:
    """A key-signed Sigstore bundle as read from disk (nothing checked yet but its shape)."""

    path: Path
    raw: bytes  # the file's bytes, so that what is checked is what was read
    media_type: str
    key_hint: str | None
    payload_type: str
    payload: bytes
    signature: bytes

    def statement(self) -> dict[str, Any]:
        """The in-toto statement in the payload (not verified: check the signature first)."""
        if self.payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise InputError(
                f"{self.path} signs a {self.payload_type!r} payload",
                "expected an in-toto statement",
            )
        try:
            statement = json.loads(self.payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.path}: the signed payload is not JSON", _NOT_A_BUNDLE) from exc
        if not isinstance(statement, dict) or statement.get("_type") != IN_TOTO_STATEMENT:
            raise InputError(
                f"{self.path}: the signed payload is not an in-toto v1 statement", _NOT_A_BUNDLE
            )
        return statement


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``DSSEv1 <len> <type> <len> <payload>``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def pae_v02(payload_type: str, payload: bytes) -> bytes:
    """The encoding model_signing 0.2 signed by mistake (``DSSEV1``, the payload as ``b'…'``);
    its verifier still accepts it, and so does :func:`signature_problem`."""
    return f"DSSEV1 {len(payload_type)} {payload_type} {len(payload)} {payload!r}".encode()


def key_hint(public_key: Any) -> str:
    """The bundle's key hint: hex SHA-256 of the public key's PEM (SubjectPublicKeyInfo) text."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return hashlib.sha256(pem).hexdigest()


def _ecdsa(public_key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    size = public_key.curve.key_size
    algorithm = (
        hashes.SHA256() if size == 256 else hashes.SHA384() if size == 384 else hashes.SHA512()
    )
    return ec.ECDSA(algorithm)


def in_toto_statement(
    subject_name: str, subject_sha256: str, predicate_type: str, predicate: dict[str, Any]
) -> dict[str, Any]:
    """An in-toto v1 statement about one subject named by its SHA-256."""
    return {
        "_type": IN_TOTO_STATEMENT,
        "subject": [{"name": subject_name, "digest": {"sha256": subject_sha256}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def subject_digest(statement: dict[str, Any]) -> Digest:
    """The SHA-256 digest of a statement's (first) subject."""
    try:
        return Digest("sha256", str(statement["subject"][0]["digest"]["sha256"]))
    except (KeyError, IndexError, TypeError) as exc:
        raise InputError("the signed statement has no sha256 subject", _NOT_A_BUNDLE) from exc


def sign_statement(statement: dict[str, Any], private_key: str | os.PathLike[str]) -> str:
    """Sign an in-toto statement with an EC private key; return the bundle as JSON text."""
    key = load_private_key(private_key)
    payload = json.dumps(statement, indent=2, sort_keys=True).encode("utf-8")
    signature = key.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload), _ecdsa(key.public_key()))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key_hint(key.public_key())},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }
    return json.dumps(bundle)


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a key-signed Sigstore bundle; :class:`InputError` when it is not one."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"signature {file} does not exist", "give the .sig file written by seal")
    raw = read_bytes(file, what="signature", limit=DOCUMENT_LIMIT, flag=None)
    try:
        data = json.loads(raw)
        envelope = data["dsseEnvelope"]
        public_key = (data.get("verificationMaterial") or {}).get("publicKey") or {}
        bundle = Bundle(
            path=file,
            raw=raw,
            media_type=str(data["mediaType"]),
            key_hint=public_key.get("hint") or None,
            payload_type=str(envelope["payloadType"]),
            payload=base64.b64decode(envelope["payload"], validate=True),
            signature=base64.b64decode(envelope["signatures"][0]["sig"], validate=True),
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, binascii.Error) as exc:
        raise InputError(
            f"{file} is not a Sigstore bundle ({type(exc).__name__}: {exc})", _NOT_A_BUNDLE
        ) from exc
    if bundle.media_type != BUNDLE_MEDIA_TYPE:
        raise InputError(
            f"{file} has bundle media type {bundle.media_type!r}",
            "only key-signed bundles (v0.3) are supported",
        )
    return bundle


def signature_problem(bundle: Bundle, public_key: str | os.PathLike[str]) -> str | None:
    """``None`` when the bundle's DSSE signature verifies with ``public_key``, else why not."""
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key)
    if bundle.key_hint is not None and bundle.key_hint != key_hint(key):
        return (
            "Key mismatch: the bundle names another public key "
            f"(hint {bundle.key_hint[:16]}…, this key {key_hint(key)[:16]}…)"
        )
    for encode in (pae, pae_v02):
        try:
            key.verify(bundle.signature, encode(bundle.payload_type, bundle.payload), _ecdsa(key))
        except InvalidSignature:
            continue
        return None
    return "the signature does not verify with this public key"


def write_signature(path: Path, bundle_json: str) -> None:
    """Write a bundle atomically, readable by all (0644): a signature is meant to be shared."""
    from lmassay._atomic import atomic_write_text

    atomic_write_text(path, bundle_json)
    os.chmod(path, 0o644)
