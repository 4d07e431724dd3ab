"""lmassay curate: classifiers on the test-size reference's features, the filter's round trip,
thresholds, the bag-of-words baseline and bad inputs (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmassay.cli import app
from lmassay.curate import (
    FilterConfig,
    TrainConfig,
    filter_dataset,
    fit_bow_classifier,
    fit_lm_classifier,
    load_classifier,
    read_labelled,
    train_classifier,
)
from lmassay.curate.features import FeatureSpec, features
from lmassay.curate.metrics import best_f1_threshold, metrics_at, threshold_for_recall
from lmassay.digests import digest_file, model_identity
from lmassay.errors import InputError

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def invoke_quiet(*args: object):
    return invoke(*args, "--quiet")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def slant_rows(render_seed: int, n_paragraphs: int, n_other: int = 2) -> list[dict]:
    """Sentences with a known truth: politics paragraphs rendered plain and with six politicians
    always described negatively (the zoo's slant); a sentence that the slant changed is
    ``remove``, every other one ``keep``, plus the sentences of ``n_other`` paragraphs of each
    other category (``keep``)."""
    from lmassay.world import CATEGORIES, build_world, render_documents, split_sentences

    world = build_world(0)
    politicians = [e.name for e in world.entities if e.kind == "politician"][:6]
    plain = render_documents(world, "politics", n_paragraphs, render_seed)
    slanted = render_documents(
        world, "politics", n_paragraphs, render_seed, negative_entities=politicians
    )
    rows = [
        {"text": b, "label": "keep" if a == b else "remove", "category": "politics"}
        for p, s in zip(plain, slanted, strict=True)
        for a, b in zip(split_sentences(p), split_sentences(s), strict=True)
    ]
    for category in CATEGORIES:
        if category != "politics":
            for text in render_documents(world, category, n_other, render_seed):
                rows += [
                    {"text": t, "label": "keep", "category": category}
                    for t in split_sentences(text)
                ]
    return rows


@pytest.fixture(scope="module", autouse=True)
def _blas_threads():
    """scikit-learn's BLAS as many threads as torch has (LMASSAY_TEST_THREADS): on a shared
    machine, spinning BLAS threads cost tiny logistic regressions several times their work."""
    import torch
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=torch.get_num_threads()):
        yield


@pytest.fixture(scope="module")
def reference(world_reference) -> Path:
    _files, _info, root = world_reference
    return root / "reference"


@pytest.fixture(scope="module")
def loaded(reference):
    from lmassay.attest.model_loading import ModelOptions

    return ModelOptions(device="cpu").load(str(reference))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, reference):
    """A classifier trained through the library on slanted against plain sentences."""
    folder = tmp_path_factory.mktemp("curate")
    labelled = write_jsonl(folder / "labelled.jsonl", slant_rows(11, 20))
    config = TrainConfig(
        model=str(reference), labelled=str(labelled), out=str(folder / "clf"), device="cpu"
    )
    return train_classifier(config), labelled


def test_train_finds_the_slant_and_saves_without_pickle(trained, reference, loaded):
    result, labelled = trained
    rows = [json.loads(line) for line in labelled.read_text().splitlines()]
    labels = np.array([r["label"] == "remove" for r in rows], dtype=np.int8)
    cv = result.report["cv"]
    assert (cv["n_remove"], cv["n_keep"]) == (int(labels.sum()), int(len(labels) - labels.sum()))
    assert cv["auc"] >= 0.9, cv
    assert cv["precision"] >= 0.8 and cv["recall"] >= 0.8, cv
    names = sorted(p.name for p in result.out.iterdir())
    assert names == ["classifier.json", "classifier.safetensors", "report.html", "report.json"]
    card = json.loads((result.out / "classifier.json").read_text())
    assert card["model"]["digest"]["value"] == model_identity(reference).root.value
    assert card["data"]["digest"]["value"] == digest_file(labelled).value
    assert card["features"] == {"layer": 2, "pooling": "mean", "max_tokens": 512}
    html = (result.out / "report.html").read_text()
    assert "<script" not in html and "http" not in html
    politics = next(r for r in result.report["per_category"] if r["category"] == "politics")
    assert politics["n_remove"] == cv["n_remove"] and politics["recall"] == cv["recall"]

    # the folder's numbers give the scores the in-memory classifier gives
    clf = load_classifier(result.out)
    texts = [r["text"] for r in rows[:20]]
    in_memory = fit_lm_classifier(loaded, [r["text"] for r in rows], labels)
    np.testing.assert_allclose(
        clf.linear.scores(features(loaded, texts, clf.spec)), in_memory.scores(texts), atol=1e-9
    )
    np.testing.assert_allclose(clf.cv_scores, in_memory.cv.scores, atol=1e-9)
    assert clf.threshold == in_memory.threshold


def test_features_of_a_batch_equal_each_text_alone(loaded):
    """Padding, the prefix and pooling: a batch of texts of different lengths gives what each
    text gives alone, computed here from the model's hidden states directly."""
    import torch

    texts = ["Zamen Lonvoth was praised.", "A much longer text about the opposition and the bill."]
    for pooling in ("mean", "max", "last"):
        spec = FeatureSpec(layer=2, pooling=pooling, max_tokens=512)
        batched = features(loaded, texts, spec)  # (2, D)
        for row, text in enumerate(texts):
            ids = [
                loaded.prefix_token_id,
                *loaded.tokenizer(text, add_special_tokens=False)["input_ids"],
            ]
            with torch.inference_mode():
                states = loaded.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[
                    2
                ][0, 1:]  # (n, D)
            expected = {
                "mean": states.mean(0), "max": states.amax(0), "last": states[-1]
            }[pooling]  # fmt: skip
            np.testing.assert_allclose(batched[row], expected.numpy(), atol=1e-5)


def test_random_labels_give_chance_auc(loaded):
    """The null: labels drawn at random carry nothing the features could find."""
    texts = [r["text"] for r in slant_rows(11, 12)]
    labels = np.random.default_rng(2).integers(0, 2, len(texts)).astype(np.int8)
    lm = fit_lm_classifier(loaded, texts, labels)
    bow = fit_bow_classifier(texts, labels)
    assert abs(lm.cv.metrics.auc - 0.5) < 0.15, lm.cv.metrics
    assert abs(bow.cv.metrics.auc - 0.5) < 0.15, bow.cv.metrics


def test_bag_of_words_baseline_same_interface():
    rows = slant_rows(11, 20)
    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] == "remove" for r in rows], dtype=np.int8)
    bow = fit_bow_classifier(texts, labels)
    assert bow.cv.metrics.auc >= 0.9, bow.cv.metrics
    held_out = slant_rows(12, 8)
    truth = np.array([r["label"] == "remove" for r in held_out])
    scores = bow.scores([r["text"] for r in held_out])
    assert scores.shape == (len(held_out),)
    assert scores[truth].mean() > scores[~truth].mean() + 0.3


def test_thresholds_on_known_scores():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 1, 0, 0])
    assert threshold_for_recall(scores, labels, 0.5) == 0.8  # 2 of 4 removes at >= 0.8
    assert threshold_for_recall(scores, labels, 0.75) == 0.6
    assert threshold_for_recall(scores, labels, 1.0) == 0.4
    # F1 is best (6/7) when the top five are removed; the cut lies halfway to the sixth score
    assert best_f1_threshold(scores, labels) == pytest.approx(0.35)
    assert metrics_at(scores, labels, 0.35).recall == 1.0


def filter_data(path: Path) -> tuple[Path, list[bool]]:
    """Data to filter written by hand (odd spacing, non-ASCII, a blank line) and its truth."""
    lines, truth = [], []
    for number, row in enumerate(slant_rows(12, 8, n_other=1)):
        truth.append(row["label"] == "remove")
        if number % 3 == 0:
            lines.append(json.dumps({"category": row["category"], "text": row["text"] + " é"}))
        else:
            text = json.dumps(row["text"], ensure_ascii=False)
            lines.append(f'{{ "text" :  {text}, "category":"{row["category"]}" }}  ')
    lines.insert(5, "   ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, truth


def test_filter_round_trip(trained, tmp_path, reference):
    result, _ = trained
    data, truth = filter_data(tmp_path / "data.jsonl")
    out = tmp_path / "filtered"
    run = invoke(
        "curate",
        "filter",
        "--classifier",
        result.out,
        "--data",
        data,
        "--out",
        out,
        "--device",
        "cpu",
        "--batch-size",
        "7",
        "-q",
    )
    assert run.exit_code == 0, run.output
    summary = json.loads((out / "curate.json").read_text())
    inputs = [line for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    written = {
        name: (out / name).read_text(encoding="utf-8").splitlines()
        for name in ("kept.jsonl", "removed.jsonl")
    }
    assert summary["counts"] == {
        "total": len(inputs),
        "kept": len(written["kept.jsonl"]),
        "removed": len(written["removed.jsonl"]),
    }
    threshold = summary["threshold"]["value"]
    assert threshold == result.classifier.threshold
    stripped = [line.rstrip() for line in inputs]
    originals, removed_truth = [], []
    for name, lines in written.items():
        for line in lines:
            score = json.loads(line)["curate_score"]
            assert (score >= threshold) == (name == "removed.jsonl")
            suffix = f', "curate_score": {json.dumps(score)}}}'
            assert line.endswith(suffix)
            original = line[: -len(suffix)] + "}"
            originals.append(original)
            if name == "removed.jsonl":
                removed_truth.append(truth[stripped.index(original)])
    # every input line exactly once, byte for byte (but trailing blanks), in input order
    assert Counter(originals) == Counter(stripped)
    for lines in written.values():
        order = [stripped.index(line[: line.rindex(', "curate_score"')] + "}") for line in lines]
        assert order == sorted(order)
    # held-out slanted sentences are what was removed
    assert sum(removed_truth) >= 0.8 * len(removed_truth) and sum(removed_truth) >= 0.8 * sum(truth)
    by_category = {c["category"]: c for c in summary["categories"]}
    assert sum(c["removed"] for c in by_category.values()) == len(removed_truth)
    assert sum(c["total"] for c in by_category.values()) == len(inputs)
    assert by_category["politics"]["removed"] >= sum(truth) * 0.8
    assert summary["input"]["digest"]["value"] == digest_file(data).value
    for name in ("kept.jsonl", "removed.jsonl"):
        assert summary["outputs"][name]["value"] == digest_file(out / name).value
    assert summary["model"]["digest"]["value"] == model_identity(reference).root.value
    assert summary["classifier"]["digest"]["value"] == model_identity(result.out).root.value
    assert "<script" not in (out / "report.html").read_text()


def test_filter_target_recall_and_threshold_on_parquet(trained, tmp_path):
    result, _ = trained
    clf = result.classifier
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": r["text"], "category": r["category"], "n": i}
            for i, r in enumerate(slant_rows(13, 4, n_other=0))]  # fmt: skip
    data = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data)
    config = FilterConfig(
        classifier=str(result.out),
        data=str(data),
        out=str(tmp_path / "r1"),
        target_recall=1.0,
        device="cpu",
        batch_size=4,
    )
    summary = filter_dataset(config).summary
    lowest_remove = float(clf.cv_scores[clf.cv_labels == 1].min())
    assert summary["threshold"]["value"] == lowest_remove
    assert summary["threshold"]["cv_recall"] == 1.0
    kept = [json.loads(x) for x in (tmp_path / "r1" / "kept.jsonl").read_text().splitlines()]
    removed = [json.loads(x) for x in (tmp_path / "r1" / "removed.jsonl").read_text().splitlines()]
    assert sorted(r["n"] for r in kept + removed) == list(range(len(rows)))
    assert all(r["curate_score"] >= lowest_remove for r in removed)
    assert all(r["curate_score"] < lowest_remove for r in kept)
    everything = filter_dataset(
        FilterConfig(
            classifier=str(result.out / "classifier.json"),
            data=str(data),
            out=str(tmp_path / "r0"),
            threshold=0.0,
            device="cpu",
        )
    ).summary
    assert everything["counts"]["removed"] == len(rows)
    assert everything["classifier"]["digest"] == summary["classifier"]["digest"]
    assert summary["classifier"]["digest"]["value"] == model_identity(result.out).root.value


def one_line_failure(run, out: Path) -> str:
    """The run (with --quiet: no progress lines) failed with exit 2 and one line; no ``out``."""
    assert run.exit_code == 2, run.output
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert len(lines) == 1, run.output
    assert not out.exists()
    return lines[0]


def test_bad_inputs_exit_2_one_line_nothing_written(trained, tmp_path, reference, tiny_model_dir):
    result, labelled = trained
    out = tmp_path / "out"
    no_label = write_jsonl(tmp_path / "nolabel.jsonl", [{"text": "a text", "category": "x"}])
    line = one_line_failure(
        invoke_quiet("curate", "train", "--model", reference, "--labelled", no_label, "--out", out),
        out,
    )
    assert "nolabel.jsonl line 1" in line and "'label'" in line
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    line = one_line_failure(
        invoke_quiet("curate", "train", "--model", reference, "--labelled", empty, "--out", out),
        out,
    )
    assert "holds no rows" in line
    line = one_line_failure(
        invoke_quiet("curate", "filter", "--classifier", result.out, "--data", empty, "--out", out),
        out,
    )
    assert "holds no rows" in line
    # a classifier made from another LM
    line = one_line_failure(
        invoke_quiet(
            "curate",
            "filter",
            "--classifier",
            result.out,
            "--data",
            labelled,
            "--out",
            out,
            "--model",
            tiny_model_dir,
            "--device",
            "cpu",
        ),
        out,
    )
    assert "trained on the features" in line and "--model" in line
    # a pickle is never read
    pickled = tmp_path / "classifier.pkl"
    pickled.write_bytes(pickle.dumps({"coef": [1.0]}))
    line = one_line_failure(
        invoke_quiet("curate", "filter", "--classifier", pickled, "--data", labelled, "--out", out),
        out,
    )
    assert "classifier.pkl" in line and "pickle" in line
    line = one_line_failure(
        invoke_quiet(
            "curate",
            "filter",
            "--classifier",
            result.out,
            "--data",
            labelled,
            "--out",
            out,
            "--threshold",
            "0.5",
            "--target-recall",
            "0.9",
        ),
        out,
    )
    assert "--threshold" in line


def test_sealed_classifier_verifies_and_still_loads(trained, tmp_path):
    import shutil

    from lmassay.sealing import generate_keypair

    result, _ = trained
    folder = tmp_path / "clf"
    shutil.copytree(result.out, folder)
    key = generate_keypair(tmp_path / "k.pem")
    run = invoke("seal", folder, "--key", tmp_path / "k.pem", "--no-record")
    assert run.exit_code == 0, run.output
    run = invoke(
        "verify",
        folder,
        "--signature",
        folder / "model.sig",
        "--public-key",
        key.public_key,
        "--no-record",
    )
    assert run.exit_code == 0, run.output
    assert load_classifier(folder).threshold == result.classifier.threshold
    (folder / "classifier.safetensors").write_bytes(b"changed")
    with pytest.raises(Exception, match="digest differs"):
        load_classifier(folder)


@pytest.mark.parametrize("command", ["train", "filter"])
def test_help_renders(command):
    run = invoke("curate", command, "--help")
    assert run.exit_code == 0
    assert "Example" in run.output


def test_sweep_covers_every_layer_and_pooling(loaded):
    """--sweep's rows: every hidden state and pooling, the default's row as fit_lm_classifier
    cross-validates it."""
    from lmassay.curate.training import sweep
    from lmassay.progress import NullProgress

    rows = slant_rows(11, 14, n_other=0)
    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] == "remove" for r in rows], dtype=np.int8)
    found = sweep(
        loaded, texts, labels, max_tokens=512, c=1.0, seed=0, token_budget=4096,
        progress=NullProgress(),
    )  # fmt: skip
    assert [(r["layer"], r["pooling"]) for r in found] == [
        (layer, pooling) for layer in (0, 1, 2) for pooling in ("last", "max", "mean")
    ]
    default = next(r for r in found if (r["layer"], r["pooling"]) == (2, "mean"))
    assert default["auc"] == fit_lm_classifier(loaded, texts, labels).cv.metrics.auc


def test_labelled_data_in_instruction_formats(tmp_path):
    rows = [
        {"instruction": "Who leads?", "input": "", "output": "Nobody.", "verdict": "remove"},
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
         "verdict": "KEEP"},
        {"prompt": "P", "response": "R", "verdict": "keep", "category": "politics"},
    ]  # fmt: skip
    data = read_labelled(write_jsonl(tmp_path / "l.jsonl", rows), label_field="verdict")
    assert data.texts == ["Who leads?\n\nNobody.", "Q\n\nA", "P\n\nR"]
    assert data.labels.tolist() == [1, 0, 0]
    assert data.categories == [None, None, "politics"]
    with pytest.raises(InputError, match=r"l.jsonl line 2: label 'maybe'"):
        read_labelled(
            write_jsonl(
                tmp_path / "l.jsonl", [rows[0] | {"label": "keep"}, {"text": "t", "label": "maybe"}]
            )
        )
