"""The shipped 3-D model (phantom3d): it loads by name, recovers better than the random field on
unseen thorax phantoms, and drives drdm augment / drdm synth on a 3-D NIfTI volume."""
import json

import nibabel as nib
import numpy as np
import pytest
import torch

import drdm
from drdm import pretrained, spatial, viz
from drdm.checkpoint import resolve
from drdm.cli import main
from drdm.evaluation import table1
from drdm.phantoms import thorax_dataset, thorax_phantom

pytestmark = pytest.mark.usefixtures("one_thread")
AFFINE = np.array([[1.5, 0, 0, -20.0], [0, 1.2, 0, 8.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def net():
    return drdm.load("phantom3d")


def test_phantom3d_loads_by_name_and_is_small(net):
    path = pretrained.pretrained_path("phantom3d")
    assert path.stat().st_size < 5 * 2 ** 20                       # shipped inside the package
    assert resolve(None, 3) == path                                 # the default 3-D model
    assert net.config.ndim == 3 and net.train_config["ndim"] == 3 and net.train_config["image_size"] == 24
    assert all(p.dtype == torch.float32 for p in net.parameters())  # stored in float16, run in float32
    # the frozen time table is exact (kept in float32 in the file)
    fresh = drdm.network.sinusoidal_table(net.config.timesteps, net.config.time_dim, True)
    assert torch.equal(net.time_embed.weight, fresh)


def test_phantom3d_recovers_better_than_the_random_field(net):
    """On unseen thorax phantoms the recovered field folds less than the random field it starts
    from (Table 1's |J|<0), and it is not the identity."""
    images, _, _ = thorax_dataset(2, net.train_config["image_size"], seed=71_000)
    tab = table1(net, images, levels=(55,), seed=0, batch=2, progress=False)[55]
    rnd, rec = tab["random"], tab["recovered"]
    assert rec["negJ_pct"]["mean"] < rnd["negJ_pct"]["mean"], tab
    assert rec["mean_pct"]["mean"] > 0.1, tab


def _run(args):
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return e.code


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A 40 x 36 x 28 thorax phantom with anisotropic spacing, image and lung labels as NIfTI."""
    root = tmp_path_factory.mktemp("vol3")
    img, lab = thorax_phantom(5, 40)
    img, lab = img[:, 2:38, 6:34], lab[:, 2:38, 6:34]
    nib.save(nib.Nifti1Image(img.astype(np.float32), AFFINE), root / "ct.nii.gz")
    nib.save(nib.Nifti1Image(lab.astype(np.int16), AFFINE), root / "ct_lbl.nii.gz")
    return root / "ct.nii.gz", root / "ct_lbl.nii.gz", lab


def test_augment_and_synth_run_on_a_3d_nifti_with_phantom3d(volume, tmp_path):
    img, lbl, lab = volume
    out = tmp_path / "aug"
    assert _run(["augment", "--checkpoint", "phantom3d", "--image", img, "--label", lbl, "--levels", "20",
                 "--n", "2", "--out", out, "--device", "cpu"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and m["geometry"]["network_grid"] == [24, 24, 24] and len(m["outputs"]) == 2
    for e in m["outputs"]:
        ddf = nib.load(str(out / e["files"]["ddf"]))
        assert ddf.shape == lab.shape + (3,) and np.allclose(ddf.affine, AFFINE)
        moved = np.asarray(nib.load(str(out / e["files"]["label"])).dataobj)
        assert set(np.unique(moved)) <= set(np.unique(lab))        # labels stay labels
        assert np.abs(np.asarray(ddf.dataobj)).max() > 0.05        # it deforms
    syn = tmp_path / "syn"
    assert _run(["synth", "--checkpoint", "phantom3d", "--image", img, "--label", lbl, "--pairs", "20:20",
                 "--n", "1", "--out", syn, "--device", "cpu"]) == 0
    m = json.loads((syn / "manifest.json").read_text())
    e = m["outputs"][0]
    mv = np.asarray(nib.load(str(syn / e["files"]["moving"])).dataobj, dtype=np.float32)
    fx = np.asarray(nib.load(str(syn / e["files"]["fixed"])).dataobj, dtype=np.float32)
    u = np.asarray(nib.load(str(syn / e["files"]["ddf"])).dataobj, dtype=np.float32)
    warped = spatial.warp(torch.from_numpy(mv)[None, None], torch.from_numpy(np.moveaxis(u, -1, 0).copy())[None],
                          padding_mode="border")[0, 0].numpy()
    # the pair's field takes moving onto fixed (pull-back), up to interpolation
    assert np.abs(warped - fx).mean() < 0.5 * np.abs(mv - fx).mean()


def test_centre_sections_are_the_three_orthogonal_planes():
    v = np.arange(4 * 6 * 8).reshape(4, 6, 8)
    ax, co, sa = viz.centre_sections(torch.from_numpy(v)[None, None])
    np.testing.assert_array_equal(ax, v[2])
    np.testing.assert_array_equal(co, v[:, 3])
    np.testing.assert_array_equal(sa, v[:, :, 4])
    assert (ax.shape, co.shape, sa.shape) == ((6, 8), (4, 8), (4, 6))
