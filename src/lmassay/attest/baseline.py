"""``--baseline``: compare a model scored alone with an earlier attestation of a trusted model.

The baseline folder's ``samples.jsonl`` gives each probe sample's summed log-probability; the
samples must be the same (same ids and byte lengths), and the comparison is bits per byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmassay.attest.document import Attestation, BaselineInfo
from lmassay.attest.probes import ProbeSet
from lmassay.bounded_read import DATA_LIMIT, iter_lines
from lmassay.errors import InputError

__all__ = ["Baseline", "load_baseline"]


@dataclass
class Baseline:
    """An earlier attestation of a trusted model on the same probes, standing in for a reference."""

    path: Path
    logprobs: list[float]
    n_tokens: list[int]
    attestation: Attestation

    def describe(self) -> BaselineInfo:
        model = self.attestation.model
        return BaselineInfo(
            path=str(self.path),
            model=model.name if model else None,
            digest=model.digest if model else None,
        )


def load_baseline(path_text: str, probes: ProbeSet) -> Baseline:
    folder = Path(path_text)
    samples_path = folder / "samples.jsonl"
    att_path = folder / "attestation.json"
    if not samples_path.is_file() or not att_path.is_file():
        raise InputError(
            f"--baseline {path_text!r} is not an attestation folder (needs samples.jsonl and attestation.json)",
            "pass the --out folder of an earlier `lmassay attest` run of a trusted model on the same probes",
        )
    attestation = Attestation.read(att_path)
    try:
        by_id = {}
        lines = iter_lines(samples_path, what="baseline samples", limit=DATA_LIMIT, flag=None)
        for line_no, raw in enumerate(lines, 1):
            line = raw.decode("utf-8")
            if line.strip():
                row = json.loads(line)
                by_id[str(row["id"])] = (
                    float(row["logprob_model"]),
                    int(row["n_bytes"]),
                    int(row["n_tokens"]),
                    line_no,
                )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"--baseline {path_text!r} could not be read ({exc})", "re-run the baseline attestation"
        ) from exc
    logprobs, n_tokens = [], []
    for sample in probes.samples:
        if sample.id not in by_id:
            raise InputError(
                f"--baseline {path_text!r} has no score for probe sample {sample.id!r}",
                "run the baseline on the same probe corpus (same ids)",
            )
        logprob, n_bytes, tokens, line_no = by_id[sample.id]
        if n_bytes != sample.n_bytes:
            raise InputError(
                f"--baseline {path_text!r} sample {sample.id!r} (line {line_no}) has {n_bytes} bytes, the probe has {sample.n_bytes}",
                "the probe texts changed: re-run the baseline on these probes",
            )
        logprobs.append(logprob)
        n_tokens.append(tokens)
    return Baseline(folder, logprobs, n_tokens, attestation)
