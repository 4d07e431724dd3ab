"""Weight diff of a model against the base it claims to derive from, one tensor at a time.

For every tensor: ``rel_change = ||ΔW||_F / ||W_base||_F`` with ``ΔW = W_model − W_base`` (computed in
float32), the largest absolute change, and for 2-D tensors the spectrum of ΔW:

* ``effective_rank``: the number of singular values above ``rank_rtol × σ_max`` (default 1e-2; a
  rank-one edit such as ROME gives 1, a fine-tune gives many).  The default tolerance sits above the
  rounding noise of re-saving in bfloat16 (about 2⁻⁹ of each weight) and below any edit that matters;
* ``entropy_rank``: ``exp(H(p))`` with ``p_i = σ_i / Σσ`` (Roy & Vetterli) — a smooth companion;
* exact singular values (``torch.linalg.svdvals``) when ``min(m, n) <= exact_svd_max``; beyond that a
  randomized low-rank SVD (``torch.svd_lowrank``, ``q`` = ``lowrank_q``, fixed seed): the rank is then
  capped at ``q`` and marked ``rank_saturated`` when it reaches the cap.

Tensors are read with ``safetensors.safe_open`` (memory-mapped) one name at a time from each side,
the file re-opened per tensor so that no mapping stays resident: the peak memory is a few copies of
the largest tensor (the two stored tensors, their float32 difference and the SVD work space), never
two models.  Sharded checkpoints (``model.safetensors.index.json``) and
tied names are handled: safetensors stores a tied tensor once (transformers drops ``lm_head.weight``
when it is tied to the embeddings), so a name present on one side only is accepted when its tensor
is bitwise equal to another tensor of that side that both sides have (it is then reported as an alias
of that tensor, which is compared).  Otherwise tensors are matched by name and shape, and a mismatch
is an :class:`InputError` naming the first differences.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmassay.attest.checkpoint_reader import DAMAGED_FIX, safetensors_entries
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress

INDEX_FILE = "model.safetensors.index.json"
_LAYER_RE = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks|block)\.(\d+)\.(.+)$")


@dataclass
class DiffConfig:
    """What to compare and how the spectrum of ΔW is summarised."""

    base: str
    """The claimed base checkpoint: a folder of .safetensors (sharded or not) or one file."""
    model: str
    """The model to check, in the same form."""
    rank_rtol: float = 1e-2
    """Singular values above rank_rtol × σ_max count towards the effective rank."""
    exact_svd_max: int = 512
    """Exact SVD when min(rows, cols) is at most this; a randomized low-rank SVD above."""
    lowrank_q: int = 64
    """Singular values estimated by the randomized SVD."""
    seed: int = 0
    spectrum: bool = True
    """Summarise the spectrum of each 2-D ΔW (False: norms only, much faster)."""

    def validate(self) -> None:
        if not 0 < self.rank_rtol < 1:
            raise InputError(f"--rank-rtol {self.rank_rtol} is outside (0, 1)", "use e.g. 0.01")
        if self.exact_svd_max < 1:
            raise InputError(
                f"--exact-svd-max {self.exact_svd_max} must be positive", "use e.g. 512"
            )
        if self.lowrank_q < 2:
            raise InputError(f"--lowrank-q {self.lowrank_q} must be at least 2", "use e.g. 64")


@dataclass
class TensorDiff:
    """The change of one tensor."""

    name: str
    layer: int | None
    kind: str
    shape: list[int]
    dtype: str
    changed: bool
    base_norm: float
    delta_norm: float
    rel_change: float | None  # None when the base tensor is all zeros and the model's is not
    max_abs_change: float
    effective_rank: int | None = None
    entropy_rank: float | None = None
    rank_saturated: bool = False
    svd: str | None = None  # "exact" | "lowrank" | None
    top_singular_values: list[float] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)

    def sort_key(self) -> tuple[int, float, str]:
        rel = math.inf if self.rel_change is None else self.rel_change
        return (0 if self.changed else 1, -rel, self.name)


@dataclass
class WeightDiff:
    """The diff of every tensor, changed ones first."""

    base: str
    model: str
    tensors: list[TensorDiff]
    config: dict[str, Any]
    base_hub: dict[str, Any] | None = None
    """The hub id, revision and commit of a hub-id base (``lmassay diff`` sets it); None: a path."""
    model_hub: dict[str, Any] | None = None
    """The same for the model."""

    @property
    def changed(self) -> list[TensorDiff]:
        return [t for t in self.tensors if t.changed]

    def layer_map(self) -> dict[str, dict[str, float | None]]:
        """``{layer: {kind: rel_change}}``; tensors outside numbered layers under ``"other"``."""
        grid: dict[str, dict[str, float | None]] = {}
        for t in self.tensors:
            row = "other" if t.layer is None else str(t.layer)
            grid.setdefault(row, {})[t.kind] = t.rel_change
        return grid

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "lmassay.sealing.weight_diff/v1",
            "base": self.base,
            "model": self.model,
            "base_hub": self.base_hub,
            "model_hub": self.model_hub,
            "config": self.config,
            "n_tensors": len(self.tensors),
            "n_changed": len(self.changed),
            "rank_rule": f"singular values > {self.config['rank_rtol']} x sigma_max",
            "tensors": [asdict(t) for t in self.tensors],
            "layer_map": self.layer_map(),
        }


def layer_and_kind(name: str) -> tuple[int | None, str]:
    """``transformer.h.3.mlp.c_fc.weight`` → ``(3, "mlp.c_fc.weight")``; others → ``(None, name)``."""
    match = _LAYER_RE.search(name)
    if match is None:
        return None, name
    return int(match.group(1)), match.group(2)


@dataclass
class _Checkpoint:
    """Where each tensor of a checkpoint lives: name → file, shape and dtype."""

    root: Path
    location: dict[str, Path]
    shape: dict[str, tuple[int, ...]]
    dtype: dict[str, str]
    tied: dict[str, str] = field(default_factory=dict)  # a name on this side only → its twin


def _safetensors_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InputError(
                f"{path} is not a .safetensors file", "give a model folder or a .safetensors file"
            )
        return [path]
    if not path.is_dir():
        raise InputError(f"{path} does not exist", "give a model folder or a .safetensors file")
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted({path / str(f) for f in weight_map.values()})
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise InputError(
                f"{index} is not a valid shard index ({exc})", "re-save the checkpoint"
            ) from exc
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise InputError(f"{path} lacks shards named in its index: {', '.join(absent[:3])}", "")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise InputError(
            f"{path} holds no .safetensors weights",
            "convert pickled *.bin weights to safetensors first (diff never unpickles)",
        )
    return files


def open_checkpoint(path: str | os.PathLike[str]) -> _Checkpoint:
    """Read the headers (not the data) of every safetensors file of a checkpoint."""
    root = Path(path)
    ckpt = _Checkpoint(root, {}, {}, {})
    for file in _safetensors_files(root):
        entries = safetensors_entries(file)  # header checked, a file cut short named
        for name in sorted(entries):
            if name in ckpt.location:
                raise InputError(f"tensor {name!r} appears in two shards of {root}", "")
            ckpt.location[name] = file
            ckpt.shape[name] = entries[name].shape
            ckpt.dtype[name] = entries[name].dtype
    return ckpt


def _tied_names(side: _Checkpoint, names: list[str], common: set[str], read: Any) -> dict[str, str]:
    """Names of ``side`` (not in ``common``) whose tensor equals a common tensor of the same shape."""
    import torch

    tied: dict[str, str] = {}
    for name in names:
        tensor = read(side, name)
        for other in sorted(common):
            same_layout = (side.shape[other], side.dtype[other]) == (
                side.shape[name],
                side.dtype[name],
            )
            if same_layout and torch.equal(tensor, read(side, other)):
                tied[name] = other
                break
    return tied


def check_same_architecture(base: _Checkpoint, model: _Checkpoint) -> None:
    """Raise :class:`InputError` naming the first tensors that differ in name or shape."""
    only_base = sorted(set(base.location) - set(model.location) - set(base.tied))
    only_model = sorted(set(model.location) - set(base.location) - set(model.tied))
    shapes = sorted(
        n for n in set(base.location) & set(model.location) if base.shape[n] != model.shape[n]
    )
    problems = [f"only in BASE: {n}" for n in only_base[:3]]
    problems += [f"only in MODEL: {n}" for n in only_model[:3]]
    problems += [
        f"shape of {n}: {list(base.shape[n])} vs {list(model.shape[n])}" for n in shapes[:3]
    ]
    if problems:
        total = len(only_base) + len(only_model) + len(shapes)
        raise InputError(
            f"the checkpoints do not have the same architecture ({total} mismatches; "
            + "; ".join(problems)
            + ")",
            "give as BASE the checkpoint MODEL was derived from (same architecture and size)",
        )


def _spectrum(delta: Any, config: DiffConfig) -> tuple[Any, str]:
    """Singular values of a 2-D ``delta``, largest first; exact or randomized."""
    import torch

    rows, cols = delta.shape
    if min(rows, cols) <= config.exact_svd_max:
        return torch.linalg.svdvals(delta), "exact"
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    try:
        _, s, _ = torch.svd_lowrank(delta, q=min(config.lowrank_q, rows, cols), niter=4)
    finally:
        torch.random.set_rng_state(generator_state)
    return s, "lowrank"


def diff_tensor(name: str, base_t: Any, model_t: Any, config: DiffConfig) -> TensorDiff:
    """Compare one tensor pair (any float dtype; compared in float32)."""
    import torch

    layer, kind = layer_and_kind(name)
    same = base_t.dtype == model_t.dtype and torch.equal(base_t, model_t)
    base_f = base_t.to(torch.float32)  # (same shape as the stored tensor)
    base_norm = float(torch.linalg.vector_norm(base_f))
    result = TensorDiff(
        name=name,
        layer=layer,
        kind=kind,
        shape=list(base_t.shape),
        dtype=str(base_t.dtype).replace("torch.", ""),
        changed=not same,
        base_norm=base_norm,
        delta_norm=0.0,
        rel_change=0.0,
        max_abs_change=0.0,
    )
    if same:
        return result
    delta = model_t.to(torch.float32) - base_f  # (same shape)
    del base_f
    delta_norm = float(torch.linalg.vector_norm(delta))
    result.delta_norm = delta_norm
    result.max_abs_change = float(delta.abs().max()) if delta.numel() else 0.0
    result.rel_change = (
        delta_norm / base_norm if base_norm > 0 else (0.0 if delta_norm == 0 else None)
    )
    if delta.ndim == 2 and delta_norm > 0 and config.spectrum:
        s, method = _spectrum(delta, config)  # (min(m, n),) or (q,)
        s = s.to(torch.float64)
        keep = s > config.rank_rtol * s[0]
        result.effective_rank = int(keep.sum())
        p = s[s > 0] / s[s > 0].sum()
        result.entropy_rank = float(torch.exp(-(p * p.log()).sum()))
        result.svd = method
        result.rank_saturated = method == "lowrank" and result.effective_rank >= len(s)
        result.top_singular_values = [float(v) for v in s[:5]]
    return result


def read_tensor(ckpt: _Checkpoint, name: str) -> Any:
    """One tensor, copied out of a memory map opened for this read only.

    Opening the file per tensor (its header is parsed again, which is cheap) unmaps the pages read
    so far, so the resident memory stays near one tensor pair instead of growing to both models.
    """
    from safetensors import SafetensorError, safe_open

    file = ckpt.location[name]
    try:
        with safe_open(str(file), framework="pt") as handle:
            return handle.get_tensor(name)
    except SafetensorError as exc:  # the header was checked; a damaged data section remains
        raise InputError(f"{file}: tensor {name!r} cannot be read ({exc})", DAMAGED_FIX) from exc


def diff_weights(config: DiffConfig, progress: Progress | None = None) -> WeightDiff:
    """Diff every tensor of ``config.model`` against ``config.base``; see the module docstring."""
    progress = progress or NullProgress()
    config.validate()
    base, model = open_checkpoint(config.base), open_checkpoint(config.model)
    common = set(base.location) & set(model.location)
    base.tied = _tied_names(base, sorted(set(base.location) - common), common, read_tensor)
    model.tied = _tied_names(model, sorted(set(model.location) - common), common, read_tensor)
    check_same_architecture(base, model)
    names = sorted(common)
    aliases: dict[str, list[str]] = {}
    for alias, twin in [*base.tied.items(), *model.tied.items()]:
        aliases.setdefault(twin, []).append(alias)
    results: list[TensorDiff] = []
    update = progress.task("diffing tensors", len(names))
    for done, name in enumerate(names, start=1):
        base_t = read_tensor(base, name)
        model_t = read_tensor(model, name)
        item = diff_tensor(name, base_t, model_t, config)
        item.aliases = sorted(aliases.get(name, []))
        results.append(item)
        del base_t, model_t
        update(done, len(names))
    results.sort(key=TensorDiff.sort_key)
    return WeightDiff(str(config.base), str(config.model), results, asdict(config))


# ------------------------------------------------------------------------------------------------
# HTML heat map
# ------------------------------------------------------------------------------------------------

_LOG_FLOOR = -8.0  # log10 of the smallest relative change the colour scale distinguishes


def _colour(rel: float | None) -> str:
    """White-to-red by log10(rel change) from 1e-8 to 1; grey for unchanged, black for infinite."""
    if rel is None:
        return "#000000"
    if rel == 0:
        return "#eeeeee"
    level = min(max((math.log10(rel) - _LOG_FLOOR) / -_LOG_FLOOR, 0.0), 1.0)
    green_blue = round(235 * (1 - level))
    return f"#ff{green_blue:02x}{green_blue:02x}" if level > 0 else "#fff5f5"


def _fmt(rel: float | None) -> str:
    if rel is None:
        return "inf"
    return "0" if rel == 0 else f"{rel:.2e}"


def _heat_map(diff: WeightDiff) -> tuple[str, str, str]:
    """The heat map's header cells, its layer rows and the rows of tensors outside the layers."""
    esc = html.escape
    grid = diff.layer_map()
    layers = sorted((k for k in grid if k != "other"), key=int)
    kinds: list[str] = []
    for layer in layers:
        for kind in grid[layer]:
            if kind not in kinds:
                kinds.append(kind)
    by_key = {(str(t.layer) if t.layer is not None else "other", t.kind): t for t in diff.tensors}

    def cell(layer: str, kind: str) -> str:
        item = by_key.get((layer, kind))
        if item is None:
            return "<td></td>"
        rank = "" if item.effective_rank is None else f", rank {item.effective_rank}"
        title = esc(f"{item.name}: rel change {_fmt(item.rel_change)}{rank}")
        return (
            f'<td style="background:{_colour(item.rel_change)}" title="{title}">'
            f"{esc(_fmt(item.rel_change))}</td>"
        )

    head = "".join(f"<th>{esc(k)}</th>" for k in kinds)
    body = "".join(
        f"<tr><th>{esc(layer)}</th>" + "".join(cell(layer, k) for k in kinds) + "</tr>"
        for layer in layers
    )
    others = "".join(
        f"<tr><td>{esc(kind)}</td>{cell('other', kind)}</tr>" for kind in grid.get("other", {})
    )
    return head, body, others


def render_html(diff: WeightDiff) -> str:
    """A self-contained page: summary, layer × tensor-kind heat map, the changed tensors."""
    esc = html.escape
    head, body, others = _heat_map(diff)
    changed_rows = "".join(
        f"<tr><td>{esc(t.name)}</td><td>{esc(str(t.shape))}</td><td>{esc(_fmt(t.rel_change))}</td>"
        f"<td>{t.max_abs_change:.3g}</td><td>{'' if t.effective_rank is None else t.effective_rank}"
        f"{'+' if t.rank_saturated else ''}</td>"
        f"<td>{'' if t.entropy_rank is None else f'{t.entropy_rank:.2f}'}</td></tr>"
        for t in diff.changed
    )
    rtol = diff.config["rank_rtol"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lmassay weight diff</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 12px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
th {{ background: #f6f6f6; }}
.legend span {{ display: inline-block; padding: 2px 8px; margin-right: 4px; border: 1px solid #ccc; }}
</style></head><body>
<h1>Weight diff</h1>
<p>Base: <code>{esc(diff.base)}</code><br>Model: <code>{esc(diff.model)}</code></p>
<p>{len(diff.changed)} of {len(diff.tensors)} tensors changed. Cells show
‖ΔW‖/‖W‖ (relative Frobenius change); effective rank counts singular values of ΔW above
{esc(str(rtol))} × σ<sub>max</sub>.</p>
<p class="legend"><span style="background:#eeeeee">unchanged</span>
<span style="background:{_colour(1e-7)}">1e-7</span><span style="background:{_colour(1e-4)}">1e-4</span>
<span style="background:{_colour(1e-2)}">1e-2</span><span style="background:{_colour(1.0)}">1</span></p>
<h2>Layers × tensor kinds</h2>
<table><tr><th>layer</th>{head}</tr>{body}</table>
<h2>Tensors outside the numbered layers</h2>
<table><tr><th>tensor</th><th>rel change</th></tr>{others}</table>
<h2>Changed tensors</h2>
<table><tr><th>tensor</th><th>shape</th><th>rel change</th><th>max |Δ|</th><th>eff. rank</th>
<th>entropy rank</th></tr>{changed_rows}</table>
</body></html>
"""


def write_diff_outputs(
    diff: WeightDiff,
    json_path: str | os.PathLike[str] | None,
    html_path: str | os.PathLike[str] | None,
) -> dict[str, Path]:
    """Write the JSON and/or the HTML heat map atomically; return the paths written."""
    from lmassay._atomic import atomic_write_json, atomic_write_text

    written: dict[str, Path] = {}
    if json_path is not None:
        written["json"] = atomic_write_json(json_path, _finite(diff.to_json()))
    if html_path is not None:
        written["html"] = atomic_write_text(html_path, render_html(diff))
    return written


def _finite(obj: Any) -> Any:
    """Replace non-finite floats by None (JSON has no infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
