"""ACDC ED<->ES registration (drdm.tasks.edes): pairing, the trained path, the rules, resumption."""
import dataclasses

import numpy as np
import pytest
import torch

from drdm import spatial
from drdm.data import Record
from drdm.phantoms import phantom_records
from drdm.tasks.edes import EDES_PROTOCOLS, cardiac_pairs, choose_lambda, run_edes
from drdm.tasks.edes_report import pair_scores
from drdm.tasks.edes_report import baseline_check, decide_synthesis
from drdm.tasks.registration import finetune_unsupervised, register
from drdm.tasks.voxelmorph import VoxelMorph


def _records(n=8, size=48, seed=0):
    return phantom_records("cardiac", n, size, seed, phases=("ED", "ES"))


def test_pairs_never_cross_subjects_or_frames():
    """Each pair's ED and ES label maps are its own subject's ED and ES (label counts are a signature:
    with the ROI as large as the image nothing is resampled or cut)."""
    recs = _records(5)

    def counts(lab):
        return tuple(int((np.asarray(lab) == v).sum()) for v in (1, 2, 3))

    sig = {(r.subject, r.phase): counts(r.label) for r in recs}
    assert len(set(sig.values())) == len(sig), "the signature must tell every frame apart"
    pairs = cardiac_pairs(recs, roi=48, size=48, percentiles=(0.0, 100.0))
    assert len(pairs) == 5
    for p in pairs:
        assert counts(p.ed_label) == sig[(p.subject, "ED")]
        assert counts(p.es_label) == sig[(p.subject, "ES")]


def test_a_subject_without_its_second_frame_is_refused():
    recs = [r for r in _records(2) if not (r.subject == _records(2)[0].subject and r.phase == "ES")]
    with pytest.raises(ValueError, match="both ED and ES"):
        cardiac_pairs(recs, roi=48, size=48)


def test_the_roi_is_one_crop_for_both_frames_and_follows_the_heart():
    """A heart moved to a corner of a larger image is cropped around itself, the same way in both frames."""
    r_ed, r_es = _records(1, size=48)
    big = []
    for r in (r_ed, r_es):
        img = np.zeros((96, 96), np.float32)
        lab = np.zeros((96, 96), np.int64)
        img[40:88, 44:92], lab[40:88, 44:92] = r.image, r.label
        big.append(Record(img, lab, (1.0, 1.0), np.eye(4), r.subject, r.phase, "phantom", "", "", {}))
    (p,) = cardiac_pairs(big, roi=48, size=48, percentiles=(0.0, 100.0))
    for lab in (r_ed.label, r_es.label):
        assert (lab > 0).sum() > 0
    assert (p.ed_label > 0).sum() == pytest.approx((r_ed.label > 0).sum(), rel=0.05)
    assert (p.es_label > 0).sum() == pytest.approx((r_es.label > 0).sum(), rel=0.05)


def test_a_known_shift_is_recovered_by_the_trained_registration_path():
    """VoxelMorph trained without supervision on pairs related by a 2-pixel shift predicts that shift."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.avg_pool2d(torch.rand(16, 1, 40, 40, generator=g), 5, 1, 2)
    shift = torch.zeros(1, 2, 40, 40)
    shift[:, 0] = 2.0                               # pull-back: fixed(x) = moving(x + 2 e_0)
    fixed = spatial.warp(base, shift.expand(16, -1, -1, -1))
    images = torch.cat([base, fixed])
    model = VoxelMorph(2, 1, (8, 16), (16, 16), (8,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = register(model, base[:4], fixed[:4])
    finetune_unsupervised(model, images, ["s"] * 32, steps=300, batch=8, lr=3e-3, smooth_weight=0.1, seed=0,
                          pairs=[(i, i + 16) for i in range(16)])
    u = register(model, base[:4], fixed[:4])[:, :, 8:-8, 8:-8]
    assert float(before[:, 0].mean().abs()) < 0.1
    assert float(u[:, 0].mean()) == pytest.approx(2.0, abs=0.5)
    assert float(u[:, 1].abs().mean()) < 0.5


def test_pair_scores_of_the_identity_and_of_a_perfect_field():
    _, r = _records(1)[0], _records(1)[1]
    lab = torch.from_numpy(np.asarray(r.label))[None, None]
    ident = pair_scores(torch.zeros(1, 2, *lab.shape[2:]), lab, lab)[0]
    assert ident["negj"] is None and ident["disp"] == 0
    assert all(ident[n]["dice"] == 1.0 and ident[n]["asd"] == 0 for n in ("LV", "RV", "Myo"))
    shift = torch.zeros(1, 2, *lab.shape[2:])
    shift[:, 1] = 3.0
    moved = spatial.warp(lab.float(), shift, mode="label")
    scored = pair_scores(shift, lab, moved)[0]
    assert scored["negj"] == 0.0 and scored["disp"] == pytest.approx(3.0)
    assert min(scored[n]["dice"] for n in ("LV", "RV", "Myo")) > 0.99


def test_lambda_rule_and_synthesis_rule():
    trials = {0.01: {"val": {"a": {"dice": 0.80, "negj": 30.0}, "b": {"dice": 0.82, "negj": 20.0}}},
              0.1: {"val": {"a": {"dice": 0.78, "negj": 5.0}, "b": {"dice": 0.79, "negj": 8.0}}},
              1.0: {"val": {"a": {"dice": 0.70, "negj": 0.0}, "b": {"dice": 0.71, "negj": 0.0}}}}
    assert choose_lambda(trials, 10.0) == 0.1          # the best Dice among those folding <= 10 per mille
    assert choose_lambda(trials, 0.0) == 1.0
    assert choose_lambda({k: trials[k] for k in (0.01,)}, 10.0) == 0.01   # none passes: the least folding
    assert decide_synthesis({"ci": [0.1, 2.0]}) == "reproduced"
    assert decide_synthesis({"ci": [-2.0, -0.1]}) == "contradicted"
    assert decide_synthesis({"ci": [-1.0, 1.0]}) == "inconclusive"
    assert decide_synthesis(None) == "not compared"


def test_baseline_check_needs_ten_points_and_little_folding():
    res = {"dice_difference": {"none/real vs none/synthetic": {"mean": 12.0, "ci": [9.0, 15.0]}},
           "rows": {"none/real": {"negj_permille": {"mean": 4.0}}}}
    assert baseline_check(res)["passes"]
    res["rows"]["none/real"]["negj_permille"]["mean"] = 14.0
    assert not baseline_check(res)["passes"]
    res["rows"]["none/real"]["negj_permille"]["mean"] = 4.0
    res["dice_difference"]["none/real vs none/synthetic"]["mean"] = 8.0
    assert not baseline_check(res)["passes"]


@pytest.fixture(scope="module")
def ci_protocol():
    return dataclasses.replace(EDES_PROTOCOLS["ci"], roi=48, size=32, n_test=2, n_val=1, seeds=(0, 1))


def test_a_killed_and_resumed_run_gives_the_record_of_one_run(tmp_path, ci_protocol):
    recs = _records(8)
    whole = run_edes(recs, ci_protocol, work_dir=tmp_path / "a", checkpoint="phantom2d", device="cpu")
    parts = None
    for _ in range(40):
        parts = run_edes(recs, ci_protocol, work_dir=tmp_path / "b", checkpoint="phantom2d", device="cpu",
                         stop_after=2)
        if set(parts["rows"]) == set(whole["rows"]) and all(len(parts["rows"][k]["seeds"]) == len(whole["rows"][k]["seeds"])
                                                            for k in whole["rows"]):
            break
    assert parts["markdown"] == whole["markdown"]
    assert set(whole["rows"]) == {"none/synthetic", "none/real", "mrbs/synthetic", "mrbs/real", "drdm/synthetic",
                                  "drdm/real"}
    assert whole["split"]["test"] and not set(whole["split"]["test"]) & set(whole["split"]["pool"])
    # the report-only run trains nothing and reports the same
    again = run_edes(recs, ci_protocol, work_dir=tmp_path / "a", checkpoint="phantom2d", device="cpu", stop_after=0)
    assert again["markdown"] == whole["markdown"]


def test_drdm_rows_are_skipped_with_a_reason_without_weights(tmp_path, ci_protocol, monkeypatch):
    monkeypatch.setenv("DRDM_SHARED", "none")
    res = run_edes(_records(8), ci_protocol, work_dir=tmp_path, device="cpu",
                   rows=(("none", False), ("drdm", False)))
    assert "drdm" in res["skipped"] and "drdm/synthetic" not in res["rows"]
    assert "Skipped drdm" in res["markdown"]


def test_the_example_figure_is_written_from_the_finished_models(tmp_path, ci_protocol):
    png = tmp_path / "example.png"
    run_edes(_records(8), ci_protocol, work_dir=tmp_path / "w", checkpoint="phantom2d", device="cpu",
             rows=(("none", False), ("none", True)), figure=png)
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
