"""Plain-line progress for logs and pipes: every message, each task at most once per 10 %."""

from __future__ import annotations

import io

from lmassay.progress import LineProgress


def test_line_progress_prints_messages_and_tenths_only():
    stream = io.StringIO()
    progress = LineProgress(stream)
    progress.log("loading model")
    update = progress.task("scoring", 1000)
    for done in range(0, 1001, 7):
        update(done, 1000)
    update(1000, 1000)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "loading model"
    tenths = [line for line in lines[1:] if line.startswith("scoring: ")]
    assert len(tenths) == 11  # 0 %, 10 %, ..., 100 %, each once
    assert tenths[-1].startswith("scoring: 1000/1000 (100%)") and "left" not in tenths[-1]
    assert "left" in tenths[5]
