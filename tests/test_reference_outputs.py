"""Refactors keep results: omni and reconwave give byte-identical masks (scores within one
unit of their 6th decimal) on a sample of casia1-dev, against outputs recorded before the
learned-method framework (tests/data/reference_outputs.json). Skipped without ../shared."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import REPO, invoke

REFERENCE = json.loads((REPO / "tests" / "data" / "reference_outputs.json").read_text())


@pytest.mark.shared
@pytest.mark.parametrize("method", sorted(REFERENCE["items"]))
def test_masks_and_scores_unchanged(method, casia_dir, tmp_path, monkeypatch):
    # As recorded: two compute threads (float sums, hence the 6th decimal, depend on it).
    monkeypatch.setenv("FORGECTL_THREADS", "2")
    # Recorded with jpegio's coefficients (the dev install's reader; the decoder's differ in
    # about 0.3 % of them, docs/OUTPUTS.md).
    pytest.importorskip("jpegio")
    monkeypatch.setenv("FORGECTL_JPEG_READER", "jpegio")
    items = REFERENCE["items"][method]
    # Recorded on PyTorch; the ONNX twins' agreement with it is tested in test_export.py.
    # In process: the results do not depend on where they are computed, and a worker process
    # would import torch once more (CI time, issue #13).
    result = invoke(["localize", *(casia_dir / rel for rel in items), "-m", method,
                     "--runtime", "torch", "--no-isolate", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    for rel, expected in items.items():
        # Outputs mirror the inputs' paths below their common folder.
        stem = tmp_path / Path(rel).with_suffix("")
        mask = stem.with_name(stem.name + ".mask.png").read_bytes()
        assert hashlib.sha256(mask).hexdigest() == expected["mask_sha256"], rel
        score = json.loads(stem.with_name(stem.name + ".json").read_text())["score"]
        # Scores are written rounded to 6 decimals: a float sum one ulp off can flip the last
        # digit, so one unit in the 6th decimal (plus float slack) is the tolerance.
        assert abs(score - expected["score"]) <= 1.5e-6, rel
