"""Table 1 of the paper against the release on ACDC: slice choice, the verdict rule, the record."""
import json

import h5py
import numpy as np
import pytest

from drdm.provenance import results_dir
from drdm.tasks import table1 as T


def _slices(root, subject, n, frame=1):
    for s in range(1, n + 1):
        with h5py.File(root / f"patient{subject:03d}_frame{frame:02d}_slice_{s}.h5", "w") as f:
            f["image"] = np.full((20, 16), s, np.float32)
            f["label"] = np.zeros((20, 16), np.uint8)


def test_the_central_ed_slice_of_each_subject(tmp_path):
    root = tmp_path / "slices"
    root.mkdir()
    _slices(root, 3, 9)
    _slices(root, 3, 9, frame=2)              # ES slices are never picked
    _slices(root, 12, 10)
    picked = T.central_ed_slices(tmp_path)    # the form's root or its slices/ folder
    assert [(s, p.name) for s, p in picked] == [("patient003", "patient003_frame01_slice_5.h5"),
                                                ("patient012", "patient012_frame01_slice_6.h5")]
    images = T.network_images([p for _, p in picked], size=(32, 32))
    assert images.shape == (2, 1, 32, 32)                          # stretched to the grid
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="slice form"):
        T.central_ed_slices(tmp_path / "empty")


def test_the_verdict_rule_as_stated():
    se_wide = [1.0, 3.0] * 35                   # mean 2, SD ~1.01, SE ~0.12: 2.5 SE ~0.30
    assert T.verdict(se_wide, 2.25)["verdict"] == "consistent"      # inside 2.5 SE
    assert T.verdict(se_wide, 2.2)["verdict"] == "consistent"
    r = T.verdict(se_wide, 1.5)
    assert r["verdict"] == "higher" and r["difference"] == pytest.approx(0.5) and r["ratio"] == pytest.approx(4 / 3)
    assert T.verdict(se_wide, 2.6)["verdict"] == "lower"
    tight = [10.0] * 69 + [10.01]              # SE ~0: only the 10 % band applies
    assert T.verdict(tight, 10.9)["verdict"] == "consistent" and T.verdict(tight, 11.3)["verdict"] == "lower"


def test_the_recorded_run_covers_every_slice_and_level_and_follows_the_rule():
    path = results_dir() / "cpu" / "table1_acdc.json"
    if not path.is_file():
        pytest.skip("no recorded Table 1 on ACDC (make table1-acdc)")
    doc = json.loads(path.read_text())["numbers"]
    assert doc["levels"] == list(T.LEVELS) and len(doc["subjects"]) == 70
    for lv in T.LEVELS:
        rows = doc["per_slice"][str(lv)]
        assert all(len(rows[k][m]) == 70 for k in ("random", "recovered") for m in T.METRICS)
    again = T.summarise({lv: doc["per_slice"][str(lv)] for lv in T.LEVELS})
    assert [r["verdict"] for r in again["rows"]] == [r["verdict"] for r in doc["rows"]]
    assert again["sentence"] == doc["sentence"]
    assert {(r["T_prime"], r["metric"]) for r in doc["rows"]} == {(lv, m) for lv in T.LEVELS for m in T.METRICS}


def test_findings_read_the_verdicts_by_metric():
    rows = [{"T_prime": lv, "metric": m, "verdict": v} for lv, m, v in (
        (30, "max_pct", "consistent"), (45, "max_pct", "higher"), (30, "mean_pct", "consistent"),
        (45, "mean_pct", "consistent"), (30, "negJ_pct", "lower"), (45, "negJ_pct", "higher"))]
    assert T.findings(rows) == ["max |phi|: consistent at T' = 30; higher at T' = 45",
                                "mean |phi|: consistent at every level",
                                "|J|<0: lower at T' = 30; higher at T' = 45"]


def test_the_reproducibility_chapter_quotes_the_records_findings():
    """The row "Table 1, paper vs release" states what the record says, metric by metric."""
    from pathlib import Path
    path = results_dir() / "cpu" / "table1_acdc.json"
    if not path.is_file():
        pytest.skip("no recorded Table 1 on ACDC (make table1-acdc)")
    doc = json.loads(path.read_text())["numbers"]
    text = (Path(__file__).resolve().parents[1] / "book" / "reproducibility.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| Table 1, paper vs release"))
    for phrase in doc["findings"]:
        assert phrase.replace("|", "\\|") in row, phrase
