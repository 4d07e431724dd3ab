"""Seal and verify: keys, round trips with the model_signing CLI, tamper detection, attestation
statements, golden manifests.

Golden manifests live in tests/data/golden/manifest_*.json; after an intended change run

    LMASSAY_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_sealing.py -q
    git diff tests/data/golden/
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmassay.cli import app
from lmassay.digests import digest_tree
from lmassay.errors import InputError
from lmassay.sealing import build_manifest, generate_keypair, seal, sign_attestation, verify
from lmassay.sealing.manifest import read_safetensors_header
from lmassay.sealing.verifying import decode_bundle_statement

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
REGEN = os.environ.get("LMASSAY_REGEN_GOLDEN") == "1"
MODEL_SIGNING = str(Path(sys.executable).parent / "model_signing")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _tmp_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("LMASSAY_REGISTRY", str(tmp_path / "registry.sqlite"))


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return generate_keypair(folder / "signer.pem")


@pytest.fixture(scope="module")
def sharded_model(tmp_path_factory) -> Path:
    """A tiny GPT-2 saved in several safetensors shards with an index (random weights)."""
    from lmassay.world.tiny_lm import build_model, tiny_gpt2_config

    folder = tmp_path_factory.mktemp("sharded") / "model"
    model = build_model(tiny_gpt2_config(64, n_layer=2, n_embd=32, n_positions=32), seed=0)
    model.save_pretrained(folder, max_shard_size="40KB")
    (folder / "README.md").write_text("tiny model\n", encoding="utf-8")
    return folder


def fresh_copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def run_model_signing(*args) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MODEL_SIGNING, *[str(a) for a in args]], capture_output=True, text=True, timeout=120
    )


def shard_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.safetensors"))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------------
# keys
# ------------------------------------------------------------------------------------------------


def test_keygen_modes_fingerprint_and_no_overwrite(tmp_path):
    from cryptography.hazmat.primitives import serialization

    pair = generate_keypair(tmp_path / "k.pem")
    assert stat.S_IMODE(pair.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.public_key.stat().st_mode) == 0o644
    assert pair.public_key == tmp_path / "k.pub"
    public = serialization.load_pem_public_key(pair.public_key.read_bytes())
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pair.fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()
    before = pair.private_key.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        generate_keypair(tmp_path / "k.pem")
    assert pair.private_key.read_bytes() == before
    result = invoke("keygen", "--out", tmp_path / "k.pem")
    assert result.exit_code == 2 and "--force" in result.output
    result = invoke("keygen", "--out", tmp_path / "k.pem", "--force")
    assert result.exit_code == 0 and "fingerprint: sha256:" in result.output
    assert pair.private_key.read_bytes() != before


# ------------------------------------------------------------------------------------------------
# round trips with the model_signing CLI
# ------------------------------------------------------------------------------------------------


def test_lmassay_seal_verifies_with_model_signing(sharded_model, keys, tmp_path):
    folder = fresh_copy(sharded_model, tmp_path)
    result = invoke("seal", folder, "--key", keys.private_key, "--quiet")
    assert result.exit_code == 0, result.output
    signature = folder / "model.sig"
    assert stat.S_IMODE(signature.stat().st_mode) == 0o644  # signatures are shared
    proc = run_model_signing(
        "verify", "key", folder, "--signature", signature, "--public_key", keys.public_key
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Verification succeeded" in proc.stdout
    # model.sig is model_signing's own statement; the tensor digests are signed beside it, about
    # the same root digest, one per tensor of every shard
    statement = decode_bundle_statement(signature)
    assert set(statement["predicate"]) == {"serialization", "resources"}
    assert {"model.sig", "model.tensors.sig"} <= set(
        statement["predicate"]["serialization"]["ignore_paths"]
    )
    tensor_statement = decode_bundle_statement(folder / "model.tensors.sig")
    assert tensor_statement["predicateType"] == "https://lmassay.dev/tensors/v1"
    assert tensor_statement["subject"] == statement["subject"]
    tensors = tensor_statement["predicate"]["tensors"]
    expected = sum(
        len([k for k in read_safetensors_header(folder / s)[0] if k != "__metadata__"])
        for s in shard_names(folder)
    )
    assert len(tensors) == expected > 0
    assert all(isinstance(n, int) for t in tensors for n in t["shape"])
    checked = verify(folder, signature, keys.public_key)
    assert checked.valid and checked.tensor_detail and checked.signer == keys.fingerprint
    assert checked.actual_root.value == statement["subject"][0]["digest"]["sha256"]
    # --no-tensors: no tensor statement, and a stale one is removed
    assert invoke("seal", folder, "--key", keys.private_key, "--no-tensors", "-q").exit_code == 0
    assert not (folder / "model.tensors.sig").exists()
    checked = verify(folder, signature, keys.public_key)
    assert checked.valid and not checked.tensor_detail


def test_tensor_statement_is_used_only_when_it_vouches_for_this_seal(sealed_copy, keys, tmp_path):
    folder, signature = sealed_copy
    sidecar = tmp_path / "model.tensors.sig"
    first = folder / shard_names(folder)[0]
    flip_byte(first, first.stat().st_size - 2)
    assert verify(folder, signature, keys.public_key).diff.changed_tensors
    # the same tensors signed by another key: ignored, with a note, and only files are named
    other = generate_keypair(tmp_path / "other.pem")
    from lmassay.sealing.tensor_statement import write_tensor_statement

    manifest = build_manifest(fresh_copy(folder, tmp_path / "copy"))
    write_tensor_statement(sidecar, manifest, other.private_key)
    checked = verify(folder, signature, keys.public_key)
    assert checked.signature_valid and not checked.valid and checked.diff.changed == [first.name]
    assert checked.diff.changed_tensors == [] and not checked.tensor_detail
    assert any("model.tensors.sig is ignored (Key mismatch" in n for n in checked.notes)
    # signed by the right key but about other files (another root digest): ignored as well
    write_tensor_statement(sidecar, manifest, keys.private_key)
    checked = verify(folder, signature, keys.public_key)
    assert any("not about this seal's root digest" in n for n in checked.notes)
    assert checked.diff.changed_tensors == []


def test_model_signing_signature_verifies_with_lmassay(sharded_model, keys, tmp_path):
    folder = fresh_copy(sharded_model, tmp_path)
    signature = tmp_path / "ms.sig"
    proc = run_model_signing(
        "sign", "key", folder, "--private_key", keys.private_key, "--signature", signature
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = invoke("verify", folder, "--signature", signature, "--public-key", keys.public_key)
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output and "tensor-level detail is unavailable" in result.output
    # the root digest lmassay reports is the subject model_signing signed
    statement = decode_bundle_statement(signature)
    checked = verify(folder, signature, keys.public_key)
    assert checked.actual_root.value == statement["subject"][0]["digest"]["sha256"]
    # and a change is still found, at file level
    flip_byte(folder / "config.json", 3)
    checked = verify(folder, signature, keys.public_key)
    assert not checked.valid and checked.diff.changed == ["config.json"]
    assert checked.diff.changed_tensors == []


def test_single_file_dataset_round_trip(keys, tmp_path):
    data = tmp_path / "probes.jsonl"
    data.write_text('{"text": "a", "category": "x"}\n', encoding="utf-8")
    sealed = seal(data, keys.private_key)
    assert sealed.signature == tmp_path / "probes.jsonl.sig"
    proc = run_model_signing(
        "verify", "key", data, "--signature", sealed.signature, "--public_key", keys.public_key
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verify(data, sealed.signature, keys.public_key).valid
    data.write_text('{"text": "b", "category": "x"}\n', encoding="utf-8")
    checked = verify(data, sealed.signature, keys.public_key)
    assert not checked.valid and checked.diff.changed == ["."]


def test_model_signing_v02_bundle_still_verifies(keys, tmp_path):
    """model_signing 0.2's format: files as the statement's subjects, signed over its buggy PAE."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from lmassay.sealing.dsse import IN_TOTO_PAYLOAD_TYPE, IN_TOTO_STATEMENT, key_hint, pae_v02
    from lmassay.sealing.keys import load_private_key

    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "weights.bin"):
        (folder / name).write_text(name, encoding="utf-8")
    subjects = [
        {"name": n, "digest": {"sha256": hashlib.sha256(n.encode()).hexdigest()}}
        for n in ("config.json", "weights.bin")
    ]
    payload = json.dumps(
        {"_type": IN_TOTO_STATEMENT, "subject": subjects, "predicate": {},
         "predicateType": "https://model_signing/Digests/v0.1"}
    ).encode()  # fmt: skip
    key = load_private_key(keys.private_key)
    raw = key.sign(pae_v02(IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    envelope = {"payload": base64.b64encode(payload).decode(), "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(raw).decode(), "keyid": ""}]}  # fmt: skip
    signature = tmp_path / "old.sig"
    signature.write_text(json.dumps({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": envelope,
        "verificationMaterial": {"publicKey": {"hint": key_hint(key.public_key())}},
    }))  # fmt: skip
    assert verify(folder, signature, keys.public_key).valid
    (folder / "weights.bin").write_text("changed", encoding="utf-8")
    checked = verify(folder, signature, keys.public_key)
    assert checked.signature_valid and checked.diff.changed == ["weights.bin"]


# ------------------------------------------------------------------------------------------------
# tampering: each change makes verify fail and names what changed
# ------------------------------------------------------------------------------------------------


def _tensor_data_offset(path: Path, name: str) -> int:
    header, data_start = read_safetensors_header(path)
    begin, end = header[name]["data_offsets"]
    return data_start + (begin + end) // 2


@pytest.fixture
def sealed_copy(sharded_model, keys, tmp_path):
    folder = fresh_copy(sharded_model, tmp_path)
    signature = tmp_path / "model.sig"
    seal(folder, keys.private_key, signature)
    return folder, signature


@pytest.mark.parametrize(
    "change", ["flip_config", "flip_tensor", "flip_readme", "rename_shard", "add", "delete"]
)
def test_tampering_is_named(sealed_copy, keys, change):
    folder, signature = sealed_copy
    shards = shard_names(folder)
    first = folder / shards[0]
    tensor = sorted(k for k in read_safetensors_header(first)[0] if k != "__metadata__")[0]
    if change == "flip_config":
        flip_byte(folder / "config.json", 10)
    elif change == "flip_tensor":
        flip_byte(first, _tensor_data_offset(first, tensor))
    elif change == "flip_readme":
        flip_byte(folder / "README.md", 0)
    elif change == "rename_shard":
        first.rename(folder / "renamed.safetensors")
    elif change == "add":
        (folder / "extra.bin").write_bytes(b"\0")
    elif change == "delete":
        (folder / "config.json").unlink()

    checked = verify(folder, signature, keys.public_key)
    assert checked.signature_valid and not checked.valid
    diff = checked.diff
    expected = {
        "flip_config": ("changed", ["config.json"]),
        "flip_tensor": ("changed", [shards[0]]),
        "flip_readme": ("changed", ["README.md"]),
        "rename_shard": ("renamed", [(shards[0], "renamed.safetensors")]),
        "add": ("extra", ["extra.bin"]),
        "delete": ("missing", ["config.json"]),
    }[change]
    assert getattr(diff, expected[0]) == expected[1]
    others = {"changed", "renamed", "extra", "missing"} - {expected[0]}
    assert all(getattr(diff, name) == [] for name in others)
    if change == "flip_tensor":
        assert diff.changed_tensors == [f"{shards[0]}:{tensor}"]
    result = invoke("verify", folder, "--signature", signature, "--public-key", keys.public_key)
    assert result.exit_code == 1 and "INVALID" in result.output
    named = expected[1][0] if expected[0] != "renamed" else "renamed.safetensors"
    assert str(named) in result.output


def test_model_signing_also_rejects_a_flipped_tensor(sealed_copy, keys):
    folder, signature = sealed_copy
    first = folder / shard_names(folder)[0]
    flip_byte(first, first.stat().st_size - 2)
    proc = run_model_signing(
        "verify", "key", folder, "--signature", signature, "--public_key", keys.public_key
    )
    assert proc.returncode != 0


def test_wrong_key_is_invalid_and_bad_input_is_exit_2(sealed_copy, keys, tmp_path):
    folder, signature = sealed_copy
    other = generate_keypair(tmp_path / "other.pem")
    checked = verify(folder, signature, other.public_key)
    assert not checked.signature_valid and not checked.valid and "Key mismatch" in checked.reason
    result = invoke("verify", folder, "--signature", signature, "--public-key", other.public_key)
    assert result.exit_code == 1
    # a tampered payload with the original signature no longer verifies
    bundle = json.loads(signature.read_text())
    bundle["dsseEnvelope"]["payload"] = bundle["dsseEnvelope"]["payload"][:-8] + "AAAAAAA="
    forged = tmp_path / "forged.sig"
    forged.write_text(json.dumps(bundle))
    assert not verify(folder, forged, keys.public_key).signature_valid
    # unusable input: exit 2 with one line
    (tmp_path / "junk.sig").write_text("not json")
    result = invoke("verify", folder, "--signature", tmp_path / "junk.sig", "--public-key", keys.public_key, "--quiet")  # fmt: skip
    assert result.exit_code == 2 and result.output.startswith("verify failed:")
    assert len(result.output.strip().splitlines()) == 1
    result = invoke("verify", tmp_path / "absent", "--signature", signature, "--public-key", keys.public_key)  # fmt: skip
    assert result.exit_code == 2 and "does not exist" in result.output
    result = invoke("seal", folder, "--key", keys.public_key)
    assert result.exit_code == 2 and "private key" in result.output


# ------------------------------------------------------------------------------------------------
# attestation statements
# ------------------------------------------------------------------------------------------------


def _attestation_for(folder: Path, run: Path, *, legacy: bool = False) -> Path:
    """A stored attestation.json re-pointed at ``folder`` (as lmassay attest would describe it);
    ``legacy``: as lmassay 0.1 wrote it, with the tree digest over the non-hidden files."""
    from lmassay.digests import list_files, model_identity

    att = json.loads((DATA / "attestation_tampered.json").read_text(encoding="utf-8"))
    if legacy:
        files = list_files(folder)
        digest = digest_tree(folder, files)
    else:
        identity = model_identity(folder)
        files, digest = identity.names, identity.root
    att["model"].update(path=str(folder), files=files, digest=digest.to_json())
    run.mkdir(parents=True, exist_ok=True)
    (run / "attestation.json").write_text(json.dumps(att), encoding="utf-8")
    return run / "attestation.json"


def test_attestation_from_lmassay_0_1_still_signs(sharded_model, keys, tmp_path):
    """An older attestation.json records the legacy tree digest: recognised over its files."""
    folder = fresh_copy(sharded_model, tmp_path)
    att_file = _attestation_for(folder, tmp_path / "run", legacy=True)
    signed = sign_attestation(att_file, folder, keys.private_key)
    statement = decode_bundle_statement(signed.signature)
    model = statement["predicate"]["model"]
    assert model["attested_digest"]["value"] == digest_tree(folder).value
    assert model["manifest_digest"]["value"] == statement["subject"][0]["digest"]["sha256"]
    assert verify(folder, signed.signature, keys.public_key).valid
    (folder / "README.md").write_text("other\n", encoding="utf-8")
    with pytest.raises(InputError, match="not the model this attestation is about"):
        sign_attestation(att_file, folder, keys.private_key)
    (folder / "README.md").unlink()
    with pytest.raises(InputError, match=r"lacks files the attestation read: README\.md"):
        sign_attestation(att_file, folder, keys.private_key)


def test_attestation_statement_names_exactly_these_weights(sharded_model, keys, tmp_path):
    folder = fresh_copy(sharded_model, tmp_path)
    att_file = _attestation_for(folder, tmp_path / "run")
    result = invoke("seal", att_file, "--key", keys.private_key, "--quiet")
    assert result.exit_code == 0, result.output
    statement_path = tmp_path / "run" / "attestation.sig"
    statement = decode_bundle_statement(statement_path)
    assert statement["predicateType"] == "https://lmassay.dev/attestation/v1"
    # the subject is the digest model_signing computes for the same folder
    ms_sig = tmp_path / "ms.sig"
    run_model_signing("sign", "key", folder, "--private_key", keys.private_key, "--signature", ms_sig)  # fmt: skip
    ms_subject = decode_bundle_statement(ms_sig)["subject"][0]["digest"]["sha256"]
    assert statement["subject"][0]["digest"]["sha256"] == ms_subject
    predicate = statement["predicate"]
    assert predicate["attestation"]["verdict"] == "tampered"
    assert predicate["attestation"]["flagged"] == ["cooking"]
    assert {"name", "mean_kl", "delta_bpb", "q_value", "flagged"} <= set(
        predicate["attestation"]["categories"][0]
    )
    assert predicate["probes"]["digest"]["value"].startswith("e5a7")
    assert predicate["tool"]["name"] == "lmassay"
    assert predicate["model"]["attested_digest"] == predicate["model"]["manifest_digest"]
    result = invoke(
        "verify", folder, "--signature", statement_path, "--public-key", keys.public_key
    )
    assert result.exit_code == 0, result.output
    assert "attestation statement" in result.output and "verdict tampered" in result.output
    seal(folder, keys.private_key)  # a model.sig written into the folder later is ignored
    assert verify(folder, statement_path, keys.public_key).valid
    # other weights: the statement is not about them, and the tensor is named
    first = folder / shard_names(folder)[0]
    tensor = sorted(k for k in read_safetensors_header(first)[0] if k != "__metadata__")[0]
    flip_byte(first, _tensor_data_offset(first, tensor))
    checked = verify(folder, statement_path, keys.public_key)
    assert checked.kind == "attestation" and not checked.valid
    assert checked.diff.changed_tensors == [f"{first.name}:{tensor}"]


def test_attestation_for_other_weights_is_refused(sharded_model, keys, tmp_path):
    folder = fresh_copy(sharded_model, tmp_path)
    att_file = _attestation_for(folder, tmp_path / "run")
    flip_byte(folder / "config.json", 5)
    with pytest.raises(InputError, match="not the model this attestation is about"):
        sign_attestation(att_file, folder, keys.private_key)
    result = invoke("seal", att_file, "--key", keys.private_key, "--model", tmp_path / "nowhere")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_attest_sign_end_to_end(tiny_model_dir, keys, tmp_path):
    """``lmassay attest --sign`` writes a statement that verifies against the model folder."""
    rows = [
        {"text": f"{topic} sample number {i} with a few words", "category": topic}
        for topic in ("alpha", "beta")
        for i in range(6)
    ]
    probes = tmp_path / "probes.jsonl"
    probes.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    registry = tmp_path / "reg.sqlite"
    out = tmp_path / "run"
    result = invoke(
        "attest", "--model", tiny_model_dir, "--reference", tiny_model_dir, "--probes", probes,
        "--out", out, "--device", "cpu", "--n-bootstrap", "50", "--quiet", "--no-report",
        "--sign", keys.private_key, "--registry", registry,
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    checked = verify(tiny_model_dir, out / "attestation.sig", keys.public_key)
    assert checked.valid and checked.kind == "attestation"
    from lmassay.sealing.registry import Registry

    (event,) = Registry(registry).events()
    assert event.action == "attest" and event.signer == keys.fingerprint
    assert event.digest == str(checked.actual_root)


def test_attest_sign_refuses_a_hub_id_before_running(keys, tmp_path):
    result = invoke(
        "attest", "--model", "org/not-local", "--probes", tmp_path / "p.jsonl", "--out",
        tmp_path / "o", "--sign", keys.private_key,
    )  # fmt: skip
    assert result.exit_code == 2 and "--sign needs --model to be a local folder" in result.output


# ------------------------------------------------------------------------------------------------
# golden manifests
# ------------------------------------------------------------------------------------------------


def _golden_folder(root: Path) -> Path:
    from safetensors.torch import save_file

    folder = root / "golden-model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "toy"}\n', encoding="utf-8")
    (folder / "sub" / "notes.txt").write_text("notes\n", encoding="utf-8")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n", encoding="utf-8")
    tensors = {
        "layers.0.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "layers.0.bias": torch.zeros(3, dtype=torch.float32),
        "embed.weight": torch.ones(2, 4, dtype=torch.bfloat16),
    }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_manifest_golden(kind, tmp_path):
    if kind == "folder":
        target = _golden_folder(tmp_path)
    else:
        target = tmp_path / "data.jsonl"
        target.write_text('{"text": "hello", "category": "greeting"}\n', encoding="utf-8")
    manifest = build_manifest(target)
    got = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"manifest_{kind}.json"
    if REGEN:
        path.write_text(got, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with LMASSAY_REGEN_GOLDEN=1 to create it"
    assert got == path.read_text(encoding="utf-8"), (
        f"manifest differs from {path}; if intended, regenerate with LMASSAY_REGEN_GOLDEN=1"
    )
    # independent check of the root: SHA-256 over the concatenated raw file digests, sorted by path
    files = sorted(
        (p.relative_to(target).as_posix(), hashlib.sha256(p.read_bytes()).digest())
        for p in (target.rglob("*") if target.is_dir() else [target])
        if p.is_file() and not p.name.startswith(".git")
    )
    assert manifest.root.value == hashlib.sha256(b"".join(d for _, d in files)).hexdigest()


def test_help_renders_with_examples():
    for command in ("keygen", "seal", "verify", "diff", "history"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command
