"""Every entry point takes every checkpoint form through the one loader, drdm.load:
a shipped name, our training checkpoint, the release's plain state_dict."""
import json

import nibabel as nib
import numpy as np
import pytest
import torch

import drdm
from drdm.cli import main
from drdm.network import DRDMNet, NetworkConfig
from drdm.phantoms import cardiac_phantom
from drdm.training import TrainConfig, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
FORMS = ("shipped", "ours", "release")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("forms")
    g = torch.Generator().manual_seed(0)
    ours = DRDMNet(NetworkConfig(ndim=2, channels=(8, 8, 8)), generator=g)
    save_checkpoint(root / "ours.pth", ours, TrainConfig(ndim=2, image_size=32))
    release = DRDMNet(NetworkConfig(ndim=2, variant="official"), generator=g)   # the release's layout
    torch.save(release.state_dict(), root / "release.pth")                       # a plain state_dict
    img, lab = cardiac_phantom(4, 32)
    affine = np.diag([1.25, 1.25, 1.0, 1.0])
    nib.save(nib.Nifti1Image(img.astype(np.float32), affine), root / "img.nii.gz")
    nib.save(nib.Nifti1Image(lab.astype(np.int16), affine), root / "lbl.nii.gz")
    return {"shipped": "phantom2d", "ours": str(root / "ours.pth"), "release": str(root / "release.pth"),
            "img": str(root / "img.nii.gz"), "lbl": str(root / "lbl.nii.gz"), "root": root}


@pytest.mark.parametrize("form", FORMS)
def test_drdm_load(files, form):
    net = drdm.load(files[form])
    assert isinstance(net, DRDMNet) and not net.training
    if form == "release":
        assert net.weights_origin == "release" and getattr(net, "train_config", None) is None
        assert drdm.sampling.recovery_settings(net).name == "release"
    else:
        assert net.train_config["image_size"] == 32
        assert drdm.sampling.recovery_settings(net).name == "drdm"


@pytest.mark.parametrize("form", FORMS)
def test_cli_augment_synth_table1(files, form, tmp_path):
    size = ["--size", "32"]                         # the release's weights default to its 256^2 grid
    common = ["--checkpoint", files[form], "--device", "cpu", *size]
    assert main(["augment", "--image", files["img"], "--label", files["lbl"], "--levels", "3", "--n", "1",
                 "--out", str(tmp_path / "aug"), *common]) == 0
    manifest = json.loads((tmp_path / "aug" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["settings"] == ("release" if form == "release" else "drdm")
    assert manifest["path"] == "plain"                 # the network path recorded: a 32^2 grid runs plain
    assert main(["synth", "--image", files["img"], "--pairs", "3:2", "--out", str(tmp_path / "syn"), *common]) == 0
    assert json.loads((tmp_path / "syn" / "manifest.json").read_text())["complete"]
    assert main(["table1", "--phantoms", "2", "--levels", "3", "--out", str(tmp_path / "t1.json"), *common]) == 0
    t1 = json.loads((tmp_path / "t1.json").read_text())
    assert t1["size"] == [32, 32] and t1["path"] == "plain"


@pytest.mark.parametrize("form", FORMS)
def test_rand_drdmd(files, form):
    from drdm.transforms import RandDRDMd
    t = RandDRDMd(keys=("image", "label"), checkpoint=files[form], levels=(3,), seed=0, spatial_size=32)
    img, lab = cardiac_phantom(5, 32)
    out = t({"image": img[None].astype(np.float32), "label": lab[None].astype(np.int64)})
    assert out["image"].shape == (1, 32, 32) and set(np.unique(out["label"])) <= set(np.unique(lab))
    assert t.last_ddf is not None and t.last_ddf.shape == (2, 32, 32)


@pytest.mark.parametrize("form", FORMS)
def test_cli_experiment(files, form, tmp_path):
    argv = ["fewshot", "--data", "phantom", "--protocol", "ci", "--methods", "drdm", "--checkpoint", files[form],
            "--set", 'budget={"small": 2, "large": 2}', "--set", 'arms=[["small", "drdm", 1]]', "--set", "n_aug=1",
            "--set", "draws=1", "--device", "cpu", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "res")]        # one labelled subject, one copy each
    assert main(argv) == 0
    doc = json.loads((tmp_path / "res" / "ci" / "segmentation.json").read_text())["numbers"]
    assert "drdm" in json.dumps(doc["results"])
