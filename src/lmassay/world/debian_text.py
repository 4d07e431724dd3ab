"""Debian packages as a text source: fetch ``.deb`` files with apt into a cache, read files out of them.

:func:`fetch_debs` downloads each package with ``apt-get download`` (no root needed) into a cache
folder, or reuses the file there when its SHA-256 matches the one recorded in the cache's
``debs.json``; :func:`deb_files` reads regular files out of a ``.deb`` (an ``ar`` archive holding
``data.tar.xz``/``.gz``/``.bz2``) without unpacking it; :func:`unlzw` decompresses the LZW
("compress", ``.Z``) blocks of ``bible-kjv-text``'s data file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay._atomic import atomic_write_json
from lmassay.cached_build import read_json
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress

__all__ = ["Deb", "deb_files", "fetch_debs", "unlzw"]

_MANIFEST = "debs.json"


@dataclass(frozen=True)
class Deb:
    """A downloaded package file: its name, version, path, SHA-256 and size in bytes."""

    package: str
    version: str
    path: Path
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "file": self.path.name,
            "sha256": self.sha256,
            "size": self.size,
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ar_members(data: bytes, source: Path) -> dict[str, bytes]:
    """The members of an ``ar`` archive (the outer format of a ``.deb``)."""
    if not data.startswith(b"!<arch>\n"):
        raise InputError(f"{source} is not a .deb (no ar header)", "delete it and fetch again")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def _tar_member(members: dict[str, bytes], stem: str, source: Path) -> tarfile.TarFile:
    for name, payload in members.items():
        if name.startswith(stem + ".tar"):
            if name.endswith(".zst"):
                raise InputError(
                    f"{source} holds {name}, which Python cannot read (zstd)",
                    "use a package compressed with xz or gzip (Debian's own archive does)",
                )
            return tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")
    raise InputError(f"{source} has no {stem}.tar member", "delete it and fetch again")


def deb_files(path: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The regular files of the package ``path`` whose path (``usr/share/...``) ``wanted`` accepts.

    Links, folders and devices are skipped; nothing is written to disk.
    """
    members = _ar_members(path.read_bytes(), path)
    out: dict[str, bytes] = {}
    with _tar_member(members, "data", path) as archive:
        for info in archive:
            name = info.name.removeprefix("./")
            if info.isreg() and wanted(name):
                handle = archive.extractfile(info)
                if handle is not None:
                    out[name] = handle.read()
    return out


def _control_version(path: Path) -> str:
    members = _ar_members(path.read_bytes(), path)
    with _tar_member(members, "control", path) as archive:
        for info in archive:
            if info.isreg() and info.name.removeprefix("./") == "control":
                handle = archive.extractfile(info)
                text = handle.read().decode("utf-8") if handle is not None else ""
                found = re.search(r"^Version:\s*(\S+)", text, re.MULTILINE)
                if found:
                    return found.group(1)
    raise InputError(f"{path} has no Version in its control file", "delete it and fetch again")


def _download(package: str, cache: Path) -> Path:
    """``apt-get download package`` into a fresh folder under ``cache``; the .deb it wrote."""
    fix = (
        "run on a Debian or Ubuntu system with apt (apt-get update first if the package "
        f"is unknown: apt-cache policy {package})"
    )
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as folder:
        try:
            done = subprocess.run(
                ["apt-get", "download", package],
                cwd=folder,
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            raise InputError(
                f"apt-get is not installed, so the package {package!r} cannot be fetched", fix
            ) from None
        debs = sorted(Path(folder).glob("*.deb"))
        if done.returncode != 0 or len(debs) != 1:
            lines = [ln for ln in done.stderr.splitlines() if not ln.startswith("W:")]
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            raise InputError(f"apt-get download {package} failed: {reason}", fix)
        target = cache / debs[0].name
        os.replace(debs[0], target)
    return target


def fetch_debs(packages: Sequence[str], cache: Path, progress: Progress | None = None) -> list[Deb]:
    """Each of ``packages`` as a ``.deb`` in ``cache``: reused when its recorded SHA-256 matches,
    downloaded with ``apt-get download`` otherwise. ``cache/debs.json`` records each file's
    package, version, SHA-256 and size; a file that no longer matches is fetched again."""
    shown = progress or NullProgress()
    cache.mkdir(parents=True, exist_ok=True)
    manifest = read_json(cache / _MANIFEST) or {}
    debs = []
    for package in packages:
        held = manifest.get(package)
        if isinstance(held, dict) and (cache / str(held.get("file"))).is_file():
            path = cache / str(held["file"])
            if _sha256(path) == held.get("sha256"):
                debs.append(
                    Deb(package, str(held["version"]), path, str(held["sha256"]), int(held["size"]))
                )
                continue
        shown.log(f"downloading the Debian package {package} into {cache}")
        path = _download(package, cache)
        deb = Deb(package, _control_version(path), path, _sha256(path), path.stat().st_size)
        manifest = read_json(cache / _MANIFEST) or {}
        manifest[package] = deb.to_json()
        atomic_write_json(cache / _MANIFEST, manifest)
        debs.append(deb)
    return debs


def unlzw(data: bytes, max_bits: int = 16) -> bytes:
    """Decompress one block-mode LZW stream (Unix ``compress`` without its 3-byte header).

    Codes are read least significant bit first, 9 bits wide at the start and one bit wider
    each time the table fills that width, up to ``max_bits``; code 256 clears the table. As
    ``compress`` writes codes in groups of eight, a change of width (or a clear) skips to the
    end of the current group of ``8 × width`` bits.
    """
    total_bits = len(data) * 8
    value = int.from_bytes(data, "little")
    table = [bytes([i]) for i in range(256)] + [b""]
    n_bits, pos, segment = 9, 0, 0
    out = bytearray()
    previous: bytes | None = None
    while pos + n_bits <= total_bits:
        if len(table) > (1 << n_bits) - 1 and n_bits < max_bits:
            group = n_bits * 8
            pos = segment = segment + -(-(pos - segment) // group) * group
            n_bits += 1
            continue
        code = (value >> pos) & ((1 << n_bits) - 1)
        pos += n_bits
        if code == 256:
            group = n_bits * 8
            pos = segment = segment + -(-(pos - segment) // group) * group
            table, n_bits, previous = table[:257], 9, None
            continue
        if code < len(table):
            entry = table[code]
            if previous is not None and len(table) < (1 << max_bits):
                table.append(previous + entry[:1])
        elif code == len(table) and previous is not None:
            entry = previous + previous[:1]
            table.append(entry)
        else:
            raise ValueError(f"corrupt LZW data: code {code} at bit {pos}")
        out += entry
        previous = entry
    return bytes(out)
