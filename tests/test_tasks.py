"""drdm.tasks: the ci profiles run end to end, splits never leak, the models learn."""
import json
import time

import numpy as np
from pathlib import Path

import pytest

from drdm.checkpoint import CheckpointError
import torch

from drdm import spatial
from drdm.data import ACDC_CONVENTION, Record
from drdm.phantoms import phantom_records
from drdm.tasks.augcache import make_copies
from drdm.tasks import _common, registration as R, segmentation as S


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def drdm_ckpt(tmp_path_factory):
    """Untrained 2-D and 3-D DRDM checkpoints: enough to exercise the drdm code paths."""
    from drdm.network import DRDMNet
    from drdm.training import TrainConfig, save_checkpoint
    out = {}
    for ndim, size in ((2, 32), (3, 24)):
        cfg = TrainConfig(ndim=ndim, image_size=size, device="cpu")
        torch.manual_seed(0)
        out[ndim] = save_checkpoint(tmp_path_factory.mktemp("ck") / f"drdm_{ndim}d.pth", DRDMNet(cfg.network()), cfg)
    return out


def _timed_ci_run(run, tmp_path_factory):
    """``(result, wall seconds, results dir)`` of a ci-profile runner on one thread."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("results")
    t0 = time.perf_counter()
    res = run("ci", out_dir=out)
    return res, time.perf_counter() - t0, out


@pytest.fixture(scope="module")
def seg_ci(tmp_path_factory):
    return _timed_ci_run(S.run_segmentation, tmp_path_factory)


@pytest.fixture(scope="module")
def reg_ci(tmp_path_factory):
    return _timed_ci_run(R.run_registration, tmp_path_factory)


# ---------------------------------------------------------------- segmentation

def test_segmentation_ci_end_to_end(seg_ci):
    res, wall, out = seg_ci
    assert wall < 120, f"ci profile took {wall:.0f} s"
    json.dumps(res, allow_nan=False)
    assert set(res["results"]) == {"2/50%", "4/100%"}
    assert res["skipped"] == {}                                     # phantom2d ships with the package
    for block in res["results"].values():
        assert set(block["methods"]) == {"none", "bigaug", "elastic", "drdm"}
        for m in block["methods"].values():
            for name in ("LV", "RV", "Myo"):
                for k in ("dice", "sens", "prec"):
                    assert 0 <= m["structures"][name][k]["mean"] <= 1
                assert np.isfinite(m["structures"][name]["asd"]["mean"])
            assert len(m["per_image"]["dice"]["LV"]) == res["split"]["n_test_images"]
        assert {"bigaug_vs_none", "elastic_vs_none"} <= set(res["wilcoxon"][next(iter(res["wilcoxon"]))])
    md = res["markdown"]
    assert "| #subj/ratio | aug method | LV dsc↑ | LV sns↑ | LV prec↑ | RV dsc↑" in md
    assert "| 2/50% | N/A |" in md and "|  | BigAug |" in md and "|  | DRDM |" in md
    saved = json.loads((out / "ci" / "segmentation.json").read_text())
    assert saved["numbers"]["results"].keys() == res["results"].keys()
    assert (out / "ci" / "segmentation.md").read_text().startswith("Segmentation")


def test_segmentation_split_never_leaks(seg_ci):
    res, _, _ = seg_ci
    train, test = set(res["split"]["train_subjects"]), set(res["split"]["test_subjects"])
    assert train and test and not train & test
    # both phases of a subject stay together
    recs = phantom_records("cardiac", 6, 32, 0, ("ED", "ES"))
    tr, te = _common.split_subjects(recs, 0.5, seed=3)
    assert not {r.subject for r in tr} & {r.subject for r in te}
    for part in (tr, te):
        by = {}
        for r in part:
            by.setdefault(r.subject, set()).add(r.phase)
        assert all(phases == {"ED", "ES"} for phases in by.values())


def test_segmentation_drdm_path_and_records(drdm_ckpt):
    # 3-D "volumes" of two phantom slices per subject, passed as records: sliced, preprocessed,
    # split by subject; DRDM augmentation runs from a checkpoint
    recs = []
    from drdm.phantoms import cardiac_phantom
    for k in range(4):
        i0, l0 = cardiac_phantom(50 + k, 40)
        i1, l1 = cardiac_phantom(50 + k, 40, "ES")
        recs.append(Record(np.stack([i0, i1], -1), np.stack([l0, l1], -1).astype(np.int16), (1.5, 1.5, 8.0),
                           np.eye(4), f"p{k}", "ED", "test", ACDC_CONVENTION, "", {}))
    res = S.run_segmentation("ci", data=recs, ratios=(1.0,), methods=("none", "drdm"),
                             drdm_checkpoint=drdm_ckpt[2], steps=5, n_aug=2, drdm_levels=(3,))
    assert res["skipped"] == {} and res["drdm_checkpoint"] == Path(drdm_ckpt[2]).name
    assert set(res["results"]["2/100%"]["methods"]) == {"none", "drdm"}
    assert res["split"]["n_train_images"] == 4 and res["split"]["n_test_images"] == 4
    assert "| 2/100% | N/A |" in res["markdown"] and "|  | DRDM |" in res["markdown"]
    with pytest.raises(ValueError, match="out of range"):
        S.run_segmentation("ci", methods=("drdm",), drdm_checkpoint=drdm_ckpt[2], drdm_levels=(80,))
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        S.run_segmentation("ci", methods=("drdm",), drdm_checkpoint="/nonexistent.pth")
    with pytest.raises(TypeError, match="unknown profile option"):
        S.run_segmentation("ci", stepz=3)


def test_checkpoint_resolution_is_one_rule_for_every_door(tmp_path, monkeypatch, drdm_ckpt):
    """drdm.checkpoint.resolve: a path, a shipped name, or (None) the shipped model of the data's
    dimension; the tasks skip with a reason only where nothing was asked for."""
    from drdm import pretrained
    from drdm.checkpoint import resolve
    assert resolve(drdm_ckpt[2]) == drdm_ckpt[2] and resolve("phantom2d") == pretrained.pretrained_path("phantom2d")
    assert resolve(None, 2) == pretrained.pretrained_path("phantom2d")
    with pytest.raises(CheckpointError, match="no 3-D DRDM model is shipped"):
        resolve(None, 3)
    with pytest.raises(CheckpointError, match="no such checkpoint file.*phantom2d"):
        resolve(tmp_path / "missing.pth")
    net, path, reason = _common.load_drdm(None, 3, "cpu")
    assert net is None and "no 3-D DRDM model" in reason                      # skipped, with the reason
    net, path, reason = _common.load_drdm("phantom2d", 2, "cpu")               # the name the CLI takes, too
    assert net.config.ndim == 2 and reason is None
    net, path, reason = _common.load_drdm(drdm_ckpt[3], 2, "cpu")
    assert net is None and "3-D DRDM network" in reason
    net, path, reason = _common.load_drdm(drdm_ckpt[3], 3, "cpu")
    assert net.config.ndim == 3 and reason is None


def test_drdm_augmentation_is_label_safe(drdm_ckpt):
    from drdm.phantoms import cardiac_dataset
    from drdm import load as load_model
    img, lab, _ = cardiac_dataset(1, 32)
    x, y = make_copies("drdm", img, lab, 3, 0, net=load_model(drdm_ckpt[2]), levels=(2, 3))
    assert x.shape == (3, 1, 32, 32) and y.dtype == lab.dtype
    assert set(y.unique().tolist()) <= set(lab.unique().tolist())


def test_segmentation_reaches_a_reasonable_dice():
    """Reduced version of '100 % of the subjects': 8 training subjects (ED+ES), 32 px, 200 steps."""
    recs = phantom_records("cardiac", 12, 32, 1000, ("ED", "ES"))
    x, y = _common.to_tensors(recs[:16])
    xt, yt = _common.to_tensors(recs[16:])
    model = S.train_segmenter(x, y, steps=200, batch=8, features=(16, 32, 64), norm="batch", seed=0)
    dice = S._score(S.predict(model, xt), yt)["dice"]
    assert dice.mean() > 0.6, dice.mean(0)


def test_unet_shapes_and_bce():
    for ndim, shape in ((2, (21, 18)), (3, (9, 12, 10))):
        net = S.UNet(ndim, 1, 4, (4, 8, 8))
        out = net(torch.rand(2, 1, *shape))
        assert out.shape == (2, 4, *shape)
    logits = torch.randn(2, 4, 5, 6)
    label = torch.randint(0, 4, (2, 1, 5, 6))
    onehot = torch.nn.functional.one_hot(label[:, 0], 4).movedim(-1, 1).float()
    p = torch.sigmoid(logits)
    manual = -(onehot * p.log() + (1 - onehot) * (1 - p).log()).sum(1).mean()
    torch.testing.assert_close(S.bce_loss(logits, label, 4), manual)


@pytest.mark.parametrize("ndim,norm", [(2, None), (2, "batch"), (3, "instance")])
def test_unet_from_a_generator_equals_global_seeding(ndim, norm):
    from test_network import assert_seeded_init_matches_global_seeding
    assert_seeded_init_matches_global_seeding(lambda g: S.UNet(ndim, 1, 4, (4, 8, 8), norm, generator=g))


# ---------------------------------------------------------------- registration

def test_registration_ci_end_to_end(reg_ci):
    res, wall, out = reg_ci
    assert wall < 120, f"ci profile took {wall:.0f} s"
    json.dumps(res, allow_nan=False)
    assert set(res["rows"]) == {"none/synthetic", "none/real", "mrbs/synthetic", "mrbs/real", "drdm/synthetic",
                                "drdm/real"} and res["skipped"] == {}        # phantom2d ships with the package
    assert res["rows"]["none/synthetic"]["negj_permille"] is None           # identity: no field
    # a trained registration folds some pixels, far fewer than half of them (per mille)
    for key in ("none/real", "mrbs/real", "drdm/real"):
        assert 0 <= res["rows"][key]["negj_permille"]["mean"] < 500, key
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


def test_voxelmorph_shapes_init_and_losses():
    for ndim, shape in ((2, (20, 27)), (3, (12, 10, 9))):
        net = R.VoxelMorph(ndim, 1, (8, 8, 8), (8, 8, 8), (8,))
        u = net(torch.rand(2, 1, *shape), torch.rand(2, 1, *shape))
        assert u.shape == (2, ndim, *shape)
        assert u.abs().max() < 1e-2                                           # starts near the identity
    x = spatial.identity_grid((6, 7), dtype=torch.float32)[None]
    assert R.gradient_l1(0.5 * x).item() == pytest.approx(0.5)                # 0.25 per axis, summed
    assert R.gradient_l2(0.5 * x).item() == pytest.approx(0.125)
    assert R.register(None, torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)).abs().sum() == 0


@pytest.mark.parametrize("ndim,extra", [(2, (8,)), (3, ()), (2, (16, 16))])
def test_voxelmorph_from_a_generator_equals_global_seeding(ndim, extra):
    from test_network import assert_seeded_init_matches_global_seeding
    assert_seeded_init_matches_global_seeding(lambda g: R.VoxelMorph(ndim, 1, (8, 8), (8, 8), extra, generator=g))


# ---------------------------------------------------------------- drdm experiment (CLI)

def _write_pairs(folder, n_subjects=4):
    """A folder of X.nii.gz / X_gt.nii.gz 3-D cardiac phantom volumes (2 slices each)."""
    import nibabel as nib
    from drdm.phantoms import cardiac_phantom
    folder.mkdir()
    for k in range(n_subjects):
        i0, l0 = cardiac_phantom(70 + k, 40)
        i1, l1 = cardiac_phantom(70 + k, 40, "ES")
        aff = np.diag([1.5, 1.5, 8.0, 1.0])
        nib.save(nib.Nifti1Image(np.stack([i0, i1], -1).astype(np.float32), aff), folder / f"s{k}.nii.gz")
        nib.save(nib.Nifti1Image(np.stack([l0, l1], -1).astype(np.int16), aff), folder / f"s{k}_gt.nii.gz")


def test_experiment_cli_on_a_nifti_folder_writes_table_seeds_and_times(tmp_path, capsys):
    from drdm.cli import main
    _write_pairs(tmp_path / "data")
    rc = main(["experiment", "seg", "--profile", "ci", "--data", str(tmp_path / "data"), "--methods", "none,bigaug",
               "--seeds", "3", "--set", "steps=5", "--set", "ratios=[1.0]", "--out", str(tmp_path / "res")])
    assert rc == 0
    full = json.loads((tmp_path / "res" / "ci" / "segmentation_folder.json").read_text())
    doc = full["numbers"]
    assert doc["config"]["seeds"] == [3] and doc["config"]["steps"] == 5 and full["data"] == "folder"
    assert full["provenance"]["wall_time_s"] > 0 and "wall_time_s" not in doc
    assert 0 <= doc["wilcoxon"]["2/100%"]["bigaug_vs_none"]["Average"]["dice"] <= 1
    diff = doc["dice_difference"]["2/100%"]["bigaug_vs_none"]
    assert diff["ci"][0] <= diff["mean"] <= diff["ci"][1] and diff["n"] == 4
    assert set(doc["results"]["2/100%"]["methods"]) == {"none", "bigaug"}
    # subject-level split: 4 subjects -> 2 train, 2 test, each with both slices
    assert doc["split"]["n_train_images"] == 4 and doc["split"]["n_test_images"] == 4
    assert not set(doc["split"]["train_subjects"]) & set(doc["split"]["test_subjects"])
    assert "| #subj/ratio | aug method |" in (tmp_path / "res" / "ci" / "segmentation_folder.md").read_text()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["seg", "--data", "mnms"], "needs --data-dir"),
    (["seg", "--data", "/nonexistent/folder"], "no such data folder"),
    (["seg", "--methods", "none,mrbs"], "not a segmentation method"),
    (["reg", "--methods", "bigaug"], "not a registration method"),
    (["seg", "--set", "stepz=3"], "unknown profile option"),
    (["seg", "--set", "steps"], "KEY=VALUE"),
    (["seg", "--data", "thorax3d"], "thorax3d is for reg"),
    (["seg", "--checkpoint", "/nonexistent.pth"], "no such checkpoint"),
])
def test_experiment_cli_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    from drdm.cli import main
    assert main(["experiment", *argv, "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "res").exists()


def test_experiment_cli_empty_folder_is_refused(tmp_path, capsys):
    from drdm.cli import main
    (tmp_path / "empty").mkdir()
    assert main(["experiment", "reg", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "res")]) == 2
    assert "empty" in capsys.readouterr().err
