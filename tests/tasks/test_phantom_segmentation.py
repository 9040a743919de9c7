"""Chapter 4's live run: the phantom protocols of the one segmentation pipeline (drdm.tasks.fewshot).

The phantom-ci protocol runs end to end from a temporary folder that it removes, keeps subjects whole
and in one role, reports differences without a verdict on the paper's claim, labels DRDM with its dose,
and reaches a reasonable Dice; a DRDM checkpoint and 3-D records go through the same path."""
import dataclasses
import json
import tempfile

import numpy as np
import pytest
import torch

from drdm.checkpoint import CheckpointError
from drdm.data import ACDC_CONVENTION, Record
from drdm.data.crops import prepare_slices
from drdm.phantoms import cardiac_phantom, phantom_records
from drdm.tasks import ProfileOptionError, fewshot as FS, fewshot_report as FR
from drdm.tasks._common import apply_overrides
from drdm.tasks.unet import predict, train_segmenter

pytestmark = pytest.mark.usefixtures("one_thread")

P = FS.PROTOCOLS["phantom-ci"]


@pytest.fixture(scope="module")
def phantom_ci(tmp_path_factory):
    """``(result, CPU seconds on one thread, the temporary root it ran under)``: phantom-ci with work_dir=None.
    (CPU time, not wall: under `make test`'s pytest-xdist workers it may share its core.)"""
    import time
    root = tmp_path_factory.mktemp("tmproot")
    old = tempfile.tempdir                      # (torch.compile's cache also lands there: only ours must go)
    tempfile.tempdir = str(root)
    try:
        t0 = time.process_time()            # one thread: the module's one_thread fixture
        res = FS.run_fewshot(FS.phantom_cohort(P), P, work_dir=None, checkpoint="phantom2d", device="cpu",
                             progress=False)
        return res, time.process_time() - t0, root
    finally:
        tempfile.tempdir = old


def test_phantom_ci_runs_every_planned_cell_and_leaves_nothing_behind(phantom_ci):
    res, cpu_s, root = phantom_ci
    assert cpu_s < 120, f"phantom-ci took {cpu_s:.0f} CPU s"
    json.dumps(res, allow_nan=False)
    assert res["complete"] and res["n_cells"] == len(res["planned"]) == 10 and res["skipped"] == {}
    assert not list(root.glob("drdm-fewshot-*"))               # the temporary run folder is gone
    # every cell trained exactly the fixed budget; no pilot was run
    assert res["budget"] == {"small": 100, "large": 100} and res["pilot"] == {}
    for size, block in res["results"].items():
        for m, r in block.items():
            assert all(run["steps"] == 100 for run in r["runs"])
            for name, _ in FS.STRUCTURES:
                assert 0 <= r["structures"][name]["dice"]["mean"] <= 1
    assert set(res["results"]["small"]) == {"none", "bigaug", "elastic", "drdm"}
    assert set(res["results"]["large"]) == {"none", "drdm"}


def test_phantom_split_keeps_subjects_whole_and_in_one_role(phantom_ci):
    res, _, _ = phantom_ci
    sp = res["split"]
    roles = [set(sp["test"]), set(sp["val"]), set(sp["pool"])]
    assert all(not a & b for i, a in enumerate(roles) for b in roles[i + 1:])
    assert len(sp["test"]) == P.n_test and len(sp["val"]) == P.n_val
    assert not set(sp["sets"]["d0"]) & set(sp["sets"]["d1"])
    assert set(sp["sets"]["d0"]) | set(sp["sets"]["d1"]) <= set(sp["sets"]["large"]) <= set(sp["pool"])
    # both phases of every subject are in the cohort the split was made from
    phases = {}
    for r in FS.phantom_cohort(P):
        phases.setdefault(r.subject, set()).add(r.phase)
    assert len(phases) == P.n_subjects and all(v == {"ED", "ES"} for v in phases.values())


def test_phantoms_carry_no_verdict_and_drdm_is_named_with_its_dose(phantom_ci):
    res, _, _ = phantom_ci
    assert res["labels"]["drdm"] == "DRDM (T' 20)"
    assert all(d["decision"] == "not compared" and d["paper"] is None for d in res["decisions"])
    # DRDM - BigAug exists only where both are planned (the small sets)
    assert {(d["size"], d["b"]) for d in res["decisions"]} == {("small", "bigaug"), ("small", "none"), ("large", "none")}
    assert all("no verdict" in v for v in res["verdict"])
    assert "| 1 | DRDM (T' 20) |" in res["markdown"] and "reproduced" not in res["markdown"]
    # the ACDC protocol keeps its verdict and its name for the release dose
    assert FS.PROTOCOLS["cpu"].claim and FS.PROTOCOLS["cpu"].label("drdm") == "DRDM (release dose)"


def test_new_protocol_fields_at_their_defaults_keep_the_run_key():
    """Cells of a run started before ``drdm_levels`` and ``claim`` existed keep their folder."""
    slices = prepare_slices(phantom_records("cardiac", 8, 32, 0, ("ED", "ES")), crop=32, size=32)
    base = FS.PROTOCOLS["ci"]
    key = FS.run_key(base, slices)
    assert FS.run_key(dataclasses.replace(base, threads=2, arms=()), slices) == key
    assert FS.run_key(dataclasses.replace(base, drdm_levels=(20,)), slices) != key
    assert FS.run_key(dataclasses.replace(base, claim=False), slices) != key
    # the key of the recorded ACDC run's protocol on these slices, as it was before the fields were added
    assert FS.run_key(FS.PROTOCOLS["cpu"], slices) == "5616c748fb0d"


def test_records_and_a_drdm_checkpoint_go_through_the_same_pipeline(drdm_ckpt):
    # 3-D "volumes" of two slices per subject, passed as records: sliced, split by subject, DRDM from a checkpoint
    recs = []
    for k in range(8):
        i0, l0 = cardiac_phantom(50 + k, 40)
        i1, l1 = cardiac_phantom(50 + k, 40, "ES")
        recs.append(Record(np.stack([i0, i1], -1), np.stack([l0, l1], -1).astype(np.int16), (1.5, 1.5, 8.0),
                           np.eye(4), f"p{k}", "ED", "test", ACDC_CONVENTION, "", {}))
    prot = dataclasses.replace(P, drdm_levels=(3,), budget={"small": 4, "large": 4}, eval_every=2,
                               arms=(("small", "none", 1), ("small", "drdm", 1)))
    res = FS.run_fewshot(recs, prot, work_dir=None, checkpoint=drdm_ckpt[2], device="cpu", progress=False)
    assert res["complete"] and res["skipped"] == {} and set(res["results"]["small"]) == {"none", "drdm"}
    assert res["n_slices"]["test"] == 2 * P.n_test                  # both slices of each test subject
    with pytest.raises(ValueError, match="out of range"):
        FS.run_fewshot(recs, dataclasses.replace(prot, drdm_levels=(80,)), work_dir=None, checkpoint=drdm_ckpt[2],
                       device="cpu", progress=False)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        FS.run_fewshot(recs, prot, work_dir=None, checkpoint="/nonexistent.pth", device="cpu", progress=False)
    with pytest.raises(ProfileOptionError, match="unknown profile option"):
        apply_overrides(P, {"stepz": 3})
    with pytest.raises(ValueError, match="protocol must be one of"):
        FS.run_fewshot(recs, "phantom-laptop", work_dir=None)


def test_a_unet_trained_on_phantoms_reaches_a_reasonable_dice():
    """Reduced version of '100 % of the subjects': 8 training subjects (ED+ES), 32 px, 200 steps."""
    slices = prepare_slices(phantom_records("cardiac", 12, 32, 1000, ("ED", "ES")), crop=32, size=32,
                               percentiles=(0.0, 100.0))
    x = torch.from_numpy(np.stack([s.image for s in slices]))[:, None]
    y = torch.from_numpy(np.stack([s.label for s in slices]))[:, None]
    model = train_segmenter(x[:16], y[:16], steps=200, batch=8, features=(16, 32, 64), norm="batch", seed=0)
    scores = FR.subject_scores(predict(model, x[16:]), y[16:], [s.subject for s in slices[16:]])
    assert FR.mean_dice(scores) > 0.6, scores
