"""drdm.tasks.registration: the ci profile runs end to end, MRBS pretraining beats no registration, the
3-D and DRDM paths run, synthetic pairs follow the pull-back convention, and the |J|<0 column is the
per-mille of folding pixels."""
import json

import numpy as np
import pytest
import torch

from drdm import spatial
from drdm.phantoms import phantom_records
from drdm.tasks import _common, registration as R


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registration_ci_end_to_end(reg_ci):
    res, cpu_s, out = reg_ci
    assert cpu_s < 120, f"ci profile took {cpu_s:.0f} CPU s"
    json.dumps(res, allow_nan=False)
    assert set(res["rows"]) == {"none/synthetic", "none/real", "mrbs/synthetic", "mrbs/real", "drdm/synthetic",
                                "drdm/real"} and res["skipped"] == {}        # phantom2d ships with the package
    assert res["rows"]["none/synthetic"]["negj_permille"] is None           # identity: no field
    # a trained registration folds far fewer than half of its pixels (per mille; the column's
    # arithmetic on known fields: test_folding_is_reported_per_mille)
    for key in ("none/real", "mrbs/real", "drdm/real"):
        assert res["rows"][key]["negj_permille"]["mean"] < 500, key
    train, test = set(res["split"]["train_subjects"]), set(res["split"]["test_subjects"])
    assert train and test and not train & test
    md = res["markdown"]
    assert "| synth method | real train | DSC↑ (%) | ASD↓ (vox) | HD↓ (vox) |" in md
    assert "| N/A | × |" in md and "| MRBS | ✓ |" in md
    assert (out / "ci" / "registration.json").exists()


def test_mrbs_pretraining_beats_no_registration(reg_ci):
    rows = reg_ci[0]["rows"]
    none, mrbs = rows["none/synthetic"], rows["mrbs/synthetic"]
    assert mrbs["dice"]["mean"] > none["dice"]["mean"] + 0.02
    assert mrbs["asd"]["mean"] < none["asd"]["mean"]
    assert rows["none/real"]["dice"]["mean"] > none["dice"]["mean"]
    # the gain comes with fields that move (mean |u| in voxels); the identity row moves nothing
    assert none["mean_disp_vox"]["mean"] == 0 and mrbs["mean_disp_vox"]["mean"] > R.STILL_VOX
    assert "mrbs/synthetic" not in R.still_rows(reg_ci[0])


def test_registration_3d_and_drdm_paths(drdm_ckpt):
    res = R.run_registration("ci", data="thorax3d", synthesis=("none", "mrbs", "drdm"), finetune=(False,),
                             drdm_checkpoint=drdm_ckpt[3], n_synth=1, pretrain_steps=3, drdm_pairs=((1, 0),))
    assert res["ndim"] == 3 and res["labels"] == [1, 2] and res["skipped"] == {}
    assert set(res["rows"]) == {"none/synthetic", "mrbs/synthetic", "drdm/synthetic"}
    assert "drdm/synthetic vs mrbs/synthetic" in res["wilcoxon"]
    # three pretraining steps teach nothing: the fields barely move, and the table says so
    assert res["rows"]["mrbs/synthetic"]["mean_disp_vox"]["mean"] < R.STILL_VOX
    assert "mrbs/synthetic" in R.still_rows(res) and "Not yet learned: MRBS ×" in res["markdown"]
    # a 2-D checkpoint for 3-D data is skipped with its reason
    res = R.run_registration("ci", data="thorax3d", synthesis=("drdm",), finetune=(False,),
                             drdm_checkpoint=drdm_ckpt[2])
    assert "2-D DRDM network" in res["skipped"]["drdm"] and res["rows"] == {}


def test_synthetic_pairs_follow_the_pull_back_convention(drdm_ckpt):
    from drdm import load as load_model
    imgs = _common.to_tensors(phantom_records("cardiac", 2, 32, 0))[0]
    prof = R.PROFILES["ci"]
    for method, net in (("mrbs", None), ("drdm", load_model(drdm_ckpt[2]))):
        mv, fx, dd = R.synthetic_pairs(method, imgs, 2, 0, _common.apply_overrides(prof, {"drdm_pairs": ((2, 2),)}),
                                       net=net)
        assert mv.shape == fx.shape == (4, 1, 32, 32) and dd.shape == (4, 2, 32, 32)
        assert dd.abs().amax(dim=(1, 2, 3)).min() > 0.1                    # every pair has a real target
        # the pull-back convention, for both syntheses: moving warped by the target is fixed
        err = (spatial.warp(mv, dd, padding_mode="border") - fx).abs().mean() / fx.abs().mean()
        assert err < 0.1, (method, err)
        assert (mv - fx).abs().mean() / fx.abs().mean() > err, method          # and the target does the work


def test_folding_is_reported_per_mille():
    """Known fields through the evaluation, the row summary and Table 3: no displacement folds 0 ‰,
    du0/dx0 = -2 everywhere folds 1000 ‰, the same in 4 of 16 columns folds 250 ‰; the identity
    row (no registration) has no field and shows a dash."""
    ramp = torch.linspace(0, -30, 16)[:, None]                               # du0/dx0 = -2: det(I + grad u) = -1
    ddf = torch.zeros(3, 2, 16, 16)
    ddf[1, 0] = ramp
    ddf[2, 0, :, :4] = ramp
    lab = torch.zeros(3, 1, 16, 16, dtype=torch.long)
    lab[..., 4:12, 4:12] = 1
    per_pair = R._evaluate(ddf, lab, lab, [1], identity=False)
    assert per_pair["negj"].tolist() == pytest.approx([0.0, 1000.0, 250.0])
    identity = R._evaluate(torch.zeros_like(ddf), lab, lab, [1], identity=True)
    assert np.isnan(identity["negj"]).all()
    rows = {"none/synthetic": R._row_summary({"synthesis": "none", "finetune": False, "per_pair": identity}),
            "mrbs/synthetic": R._row_summary({"synthesis": "mrbs", "finetune": False, "per_pair": per_pair})}
    assert rows["none/synthetic"]["negj_permille"] is None
    assert rows["mrbs/synthetic"]["negj_permille"]["mean"] == pytest.approx(1250 / 3)
    md = R.table3_markdown({"rows": rows}).splitlines()
    assert md[4].split(" | ")[5] == "–"                                        # N/A ×: no field
    assert md[5].split(" | ")[5] == "416.67"                                   # MRBS ×
