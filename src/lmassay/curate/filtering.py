"""``lmassay curate filter``: score every item of a dataset with a curate classifier and split it.

The output folder (written as one set through :class:`~lmassay.output_folder.OutputFolder`):

* ``kept.jsonl`` and ``removed.jsonl``: every input item exactly once, in input order, with
  ``"curate_score"`` added (the classifier's probability of ``remove``; removed when at least
  the threshold). A JSONL input line is kept byte for byte, the field inserted before its closing
  brace; rows of other sources (parquet, ``datasets``, ``hf:``) are written as JSON objects.
* ``curate.json`` (schema :data:`FILTER_SCHEMA`): counts, removed per category, the threshold
  and how it was chosen (with the classifier's cross-validated precision and recall there),
  the classifier's and the LM's digests, the input's and both outputs' digests, the items
  nearest the threshold on each side, provenance.
* ``report.html``: rendered from ``curate.json``.

Rows are read, scored and written ``batch_size`` at a time: memory does not grow with the data.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lmassay._atomic import atomic_write_json, atomic_write_text
from lmassay.bounded_read import DATA_LIMIT, iter_lines
from lmassay.curate.classifier import Classifier, load_classifier
from lmassay.curate.config import FilterConfig
from lmassay.curate.metrics import metrics_at, threshold_for_recall
from lmassay.curate.report import filter_report_html
from lmassay.digests import digest_file, model_identity
from lmassay.errors import InputError
from lmassay.instruction_data import count_rows, iter_located_rows, row_text, source_digest
from lmassay.output_folder import OutputFolder
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import provenance, utc_now

FILTER_SCHEMA = "lmassay.curate-filter/v1"
KEPT, REMOVED, SUMMARY, REPORT = "kept.jsonl", "removed.jsonl", "curate.json", "report.html"
FILTER_FILES = (KEPT, REMOVED, SUMMARY, REPORT)
SCORE_FIELD = "curate_score"
_JSONL = (".jsonl", ".json", ".ndjson")
_EXAMPLE_CHARS = 2000


@dataclass(frozen=True)
class Item:
    """One input row: where it is, the row, and its JSONL line as read (None for other sources)."""

    where: str
    row: dict[str, Any]
    line: str | None


def iter_items(source: str, split: str | None) -> Iterator[Item]:
    """The rows of ``source`` (:func:`~lmassay.instruction_data.iter_located_rows`), each with
    its JSONL line as it was read when ``source`` is a JSONL file."""
    rows = iter_located_rows(source, split=split)
    path = Path(source)
    if path.suffix.lower() not in _JSONL or not path.is_file():
        for where, row in rows:
            yield Item(where, row, None)
        return
    lines = _nonblank_lines(path)
    for where, row in rows:
        number, line = next(lines)
        if not where.endswith(f" line {number}"):  # the reader skips exactly the blank lines
            raise RuntimeError(f"JSONL lines out of step: {where} read with line {number}")
        yield Item(where, row, line)


def _nonblank_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line without its end)`` of the lines holding more than whitespace."""
    for number, raw in enumerate(iter_lines(path, what="dataset", limit=DATA_LIMIT), start=1):
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        if text.strip():
            yield number, text.rstrip("\r\n")


def scored_line(item: Item, score: float) -> str:
    """The item as an output line: its JSONL line with ``"curate_score"`` inserted before the
    closing brace, or (another source, or a row that already has the field) the row as JSON."""
    if item.line is not None and SCORE_FIELD not in item.row:
        body = item.line.rstrip()
        if not item.row:
            return f'{{"{SCORE_FIELD}": {json.dumps(score)}}}'
        return f'{body[:-1]}, "{SCORE_FIELD}": {json.dumps(score)}}}'
    return json.dumps({**item.row, SCORE_FIELD: score}, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class FilterResult:
    """The filter's output folder and its summary (``curate.json``)."""

    out: Path
    summary: dict[str, Any]


class _Examples:
    """The ``n`` removed items scoring lowest and the ``n`` kept items scoring highest."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.removed: list[tuple[float, int, dict[str, Any]]] = []  # max-heap by -score
        self.kept: list[tuple[float, int, dict[str, Any]]] = []  # min-heap by score
        self.count = 0

    def add(self, score: float, removed: bool, where: str, text: str) -> None:
        if self.n == 0:
            return
        self.count += 1
        entry = {"score": score, "where": where, "text": text[:_EXAMPLE_CHARS]}
        heap, key = (self.removed, -score) if removed else (self.kept, score)
        if len(heap) < self.n:
            heapq.heappush(heap, (key, self.count, entry))
        elif key > heap[0][0]:
            heapq.heapreplace(heap, (key, self.count, entry))

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "removed": [e for _, _, e in sorted(self.removed, key=lambda t: -t[0])],
            "kept": [e for _, _, e in sorted(self.kept, key=lambda t: -t[0])],
        }


def choose_threshold(config: FilterConfig, classifier: Classifier) -> dict[str, Any]:
    """The threshold (``--threshold``, from ``--target-recall``, or the classifier's) with its
    rule and the classifier's cross-validated precision and recall there."""
    if config.threshold is not None:
        value, rule = config.threshold, "--threshold"
    elif config.target_recall is not None:
        value = threshold_for_recall(
            classifier.cv_scores, classifier.cv_labels, config.target_recall
        )
        rule = f"--target-recall {config.target_recall} on the classifier's cross-validated scores"
    else:
        value = classifier.threshold
        rule = f"the classifier's default ({classifier.card.get('threshold_rule', 'recorded')})"
    cv = metrics_at(classifier.cv_scores, classifier.cv_labels, value)
    return {
        "value": value,
        "rule": rule,
        "target_recall": config.target_recall,
        "cv_precision": cv.precision,
        "cv_recall": cv.recall,
    }


class _Tally:
    """Counts of kept and removed items, overall and per category, and the examples."""

    def __init__(self, n_examples: int) -> None:
        self.counts: Counter[str] = Counter()
        self.per_category: dict[str, Counter[str]] = {}
        self.examples = _Examples(n_examples)

    @property
    def done(self) -> int:
        return self.counts["kept"] + self.counts["removed"]

    def add(self, item: Item, text: str, score: float, removed: bool, category_field: str) -> None:
        outcome = "removed" if removed else "kept"
        self.counts[outcome] += 1
        category = item.row.get(category_field)
        if category is not None:
            self.per_category.setdefault(str(category), Counter())[outcome] += 1
        self.examples.add(score, removed, item.where, text)

    def to_json(self) -> dict[str, Any]:
        def split(c: Counter[str]) -> dict[str, int]:
            return {"total": c["kept"] + c["removed"], "kept": c["kept"], "removed": c["removed"]}

        return {
            "counts": split(self.counts),
            "categories": [
                {"category": name, **split(c)} for name, c in sorted(self.per_category.items())
            ],
            "examples": self.examples.to_json(),
        }


def filter_dataset(config: FilterConfig, progress: Progress | None = None) -> FilterResult:
    """The ``curate filter`` recipe: check, load, score in batches, write ``config.out``."""
    progress = progress or NullProgress()
    started = time.perf_counter()
    config.validate()
    classifier = load_classifier(config.classifier)
    assert classifier.folder is not None  # read from a folder
    classifier_digest = model_identity(classifier.folder).root
    threshold = choose_threshold(config, classifier)
    total = count_rows(config.data, split=config.split)  # also checks the source exists
    if total == 0:
        raise InputError(
            f"dataset {config.data} holds no rows", "give a dataset with at least one row"
        )
    text_field = config.text_field or classifier.card["data"].get("text_field")
    spec = config.model or classifier.model_name
    with OutputFolder(config.out, owned=FILTER_FILES) as folder:
        progress.log(f"loading {spec}")
        loaded = config.load(spec)
        classifier.check_model(loaded)
        tally = _Tally(config.examples)
        task = progress.task("scoring", total or 0)
        with folder.writing() as staging:
            with open(staging / KEPT, "w", encoding="utf-8", newline="\n") as kept_file, open(
                staging / REMOVED, "w", encoding="utf-8", newline="\n"
            ) as removed_file:  # fmt: skip
                for batch in _batched(iter_items(config.data, config.split), config.batch_size):
                    texts = [row_text(item.row, text_field, item.where) for item in batch]
                    scores = classifier.score(loaded, texts, token_budget=config.token_budget)
                    for item, text, score in zip(batch, texts, scores.tolist(), strict=True):
                        removed = score >= threshold["value"]
                        _write(removed_file if removed else kept_file, scored_line(item, score))
                        tally.add(item, text, score, removed, config.category_field)
                    task(tally.done, max(total or 0, tally.done))
            summary = {
                "schema": FILTER_SCHEMA,
                "input": {
                    "source": config.data,
                    "split": config.split,
                    "digest": _digest_json(source_digest(config.data)),
                    "text_field": text_field,
                    "category_field": config.category_field,
                },
                **tally.to_json(),
                "threshold": threshold,
                "classifier": {
                    "path": str(config.classifier),
                    "digest": classifier_digest.to_json(),
                    "features": classifier.spec.to_json(),
                },
                "model": {"name": spec, "digest": loaded.digest.to_json()},
                "outputs": {
                    name: digest_file(staging / name).to_json() for name in (KEPT, REMOVED)
                },
                "provenance": {
                    **provenance(dataclasses.asdict(config), seed=0),
                    "created": utc_now(),
                    "seconds": round(time.perf_counter() - started, 3),
                    "device": loaded.device,
                    "dtype": loaded.dtype,
                },
            }
            atomic_write_json(staging / SUMMARY, summary)
            atomic_write_text(staging / REPORT, filter_report_html(summary))
        out = folder.commit()
    return FilterResult(out, summary)


def _write(handle: IO[str], line: str) -> None:
    handle.write(line)
    handle.write("\n")


def _digest_json(digest: Any) -> dict[str, str] | None:
    return None if digest is None else dict(digest.to_json())


def _batched(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
