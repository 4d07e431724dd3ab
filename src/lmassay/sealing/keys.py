"""Elliptic-curve P-256 key pairs in PEM files, and the fingerprint that names a signer.

* private key: PKCS#8 PEM, unencrypted, file mode 0600;
* public key: SubjectPublicKeyInfo PEM, file mode 0644 (what ``model_signing verify key`` reads);
* fingerprint: ``sha256:`` + hex SHA-256 of the DER-encoded public key (SubjectPublicKeyInfo).
  (model_signing's own bundle "hint" is the SHA-256 of the PEM text instead; both are shown where a
  signer is named.)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay._atomic import atomic_write_bytes
from lmassay.bounded_read import DOCUMENT_LIMIT, read_bytes
from lmassay.errors import InputError

SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # those model_signing accepts


@dataclass(frozen=True)
class KeyPair:
    """Where a generated key pair was written, and its fingerprint."""

    private_key: Path
    public_key: Path
    fingerprint: str


def default_public_path(private_path: Path) -> Path:
    """``key.pem`` → ``key.pub``; ``key`` → ``key.pub``."""
    return private_path.with_suffix(".pub") if private_path.suffix else Path(f"{private_path}.pub")


def generate_keypair(
    private_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
) -> KeyPair:
    """Create a P-256 key pair; refuse to overwrite either file unless ``force``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = Path(private_path)
    public = Path(public_path) if public_path is not None else default_public_path(private)
    if private.resolve() == public.resolve():
        raise InputError(
            "the private and public key paths are the same", "give --public-key another path"
        )
    for target in (private, public):
        if target.exists() and not force:
            raise InputError(
                f"{target} already exists", "choose another path or pass --force to overwrite"
            )
        if target.is_dir():
            raise InputError(f"{target} is a folder", "give a file path for the key")
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    atomic_write_bytes(private, private_pem, mode=0o600)  # never readable by others, even briefly
    os.chmod(private, 0o600)
    atomic_write_bytes(public, public_pem, mode=0o644)
    os.chmod(public, 0o644)
    return KeyPair(private, public, fingerprint(key.public_key()))


def fingerprint(public_key: Any) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo of ``public_key``."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _read_key_file(path: Path, what: str) -> bytes:
    """The bytes of a key file: a regular file of at most :data:`DOCUMENT_LIMIT`."""
    if not path.exists():
        raise InputError(
            f"{what} {path} does not exist", "create a pair with: lmassay keygen --out KEY"
        )
    return read_bytes(path, what=what, limit=DOCUMENT_LIMIT, flag=None)


def _check_curve(key: Any, path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise InputError(
            f"{path} is not an elliptic-curve key", "use a P-256 key from lmassay keygen"
        )
    if public.curve.name not in SUPPORTED_CURVES:
        raise InputError(
            f"{path} uses curve {public.curve.name}", "use a P-256 key from lmassay keygen"
        )


def load_private_key(path: str | os.PathLike[str], password: bytes | None = None) -> Any:
    """Load a PEM private key (EC P-256/384/521), or raise :class:`InputError`."""
    from cryptography.hazmat.primitives import serialization

    key_path = Path(path)
    data = _read_key_file(key_path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"{key_path} is not a readable PEM private key ({exc})",
            "give the private key from lmassay keygen (not the .pub file)",
        ) from exc
    _check_curve(key, key_path)
    return key


def load_public_key(path: str | os.PathLike[str]) -> Any:
    """Load a PEM public key (EC P-256/384/521), or raise :class:`InputError`."""
    from cryptography.hazmat.primitives import serialization

    key_path = Path(path)
    data = _read_key_file(key_path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise InputError(
            f"{key_path} is not a readable PEM public key ({exc})",
            "give the .pub file written by lmassay keygen",
        ) from exc
    _check_curve(key, key_path)
    return key


def public_key_fingerprint(path: str | os.PathLike[str]) -> str:
    """Fingerprint of the public key in ``path``."""
    return fingerprint(load_public_key(path))


def private_key_fingerprint(path: str | os.PathLike[str]) -> str:
    """Fingerprint of the public half of the private key in ``path``."""
    return fingerprint(load_private_key(path).public_key())
