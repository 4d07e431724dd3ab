"""Atomic writes: the content appears whole, with ordinary permissions, and nothing is left behind."""

from __future__ import annotations

import os
import stat

import pytest

from lmassay._atomic import atomic_write_bytes, atomic_write_json


def test_written_file_has_umask_permissions_not_the_temp_files(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == '{\n  "x": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_explicit_mode_and_failed_write_leaves_nothing(tmp_path):
    path = atomic_write_bytes(tmp_path / "key.pem", b"secret", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "bad.json", {"x": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pem"]
