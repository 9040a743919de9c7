"""One image, seed and setting give one DDF, one warped image and one label map through every
door: ``drdm augment``, :class:`drdm.transforms.RandDRDMd` and :func:`drdm.sampling.augment`
with the image's :class:`drdm.grid.InputGrid` (issues: one path through the package; one way
to apply a field)."""
import nibabel as nib
import numpy as np
import pytest
import torch

from drdm.checkpoint import load
from drdm.cli import main
from drdm.grid import InputGrid
from drdm.phantoms import cardiac_phantom
from drdm.sampling import augment, network_grid
from drdm.seeds import sample_seed
from drdm.transforms import RandDRDMd

pytestmark = pytest.mark.usefixtures("one_thread")

SEED, LEVEL, INDEX = 5, 10, 1


from drdm.shared import absent_reason, official_checkpoint

RELEASE = official_checkpoint()
CASES = [("phantom2d", "drdm", (32, 32), (1.0, 1.0)), ("phantom2d", "drdm", (32, 44), (1.0, 1.0)),
         ("phantom2d", "drdm", (40, 28), (1.5, 1.0)),
         pytest.param("release", "release", (40, 28), (1.5, 1.0), marks=pytest.mark.skipif(
             RELEASE is None, reason=absent_reason("the release's weights")))]


@pytest.mark.parametrize("model, settings, shape, spacing", CASES)
def test_augment_cli_randdrdmd_and_sampling_give_one_ddf_image_and_label(model, settings, shape, spacing, tmp_path):
    img, lab = cardiac_phantom(3, max(shape))
    img = (900.0 * img[:shape[0], :shape[1]] + 40.0).astype(np.float32)     # scanner-like intensities
    lab = lab[:shape[0], :shape[1]].astype(np.int16)
    aff = np.diag([*spacing, 1.0, 1.0])
    nib.save(nib.Nifti1Image(img, aff), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), tmp_path / "lab.nii.gz")

    checkpoint = str(RELEASE) if model == "release" else model
    # 1. the command line
    assert main(["augment", "--image", str(tmp_path / "img.nii.gz"), "--label", str(tmp_path / "lab.nii.gz"),
                 "--levels", str(LEVEL), "--n", "2", "--out", str(tmp_path / "cli"), "--checkpoint", checkpoint,
                 "--seed", str(SEED), "--settings", settings, "--device", "cpu"]) == 0
    tag = f"L{LEVEL}_{INDEX:03d}.nii.gz"
    ddf_cli = np.moveaxis(np.asarray(nib.load(tmp_path / "cli" / f"ddf_{tag}").dataobj, np.float32), -1, 0)
    lab_cli = np.asarray(nib.load(tmp_path / "cli" / f"lbl_{tag}").dataobj)
    img_cli = np.asarray(nib.load(tmp_path / "cli" / f"img_{tag}").dataobj, np.float32)

    net = load(checkpoint)
    grid = InputGrid(shape, spacing, network_grid(net))
    # 2. the library
    items = list(augment(net, torch.from_numpy(img)[None, None], torch.from_numpy(lab.astype(np.int64))[None, None],
                         [LEVEL], 2, grid=grid, seed=SEED, settings=settings))
    ddf_lib, lab_lib = items[INDEX]["ddf"][0].numpy(), items[INDEX]["label"][0, 0].numpy()
    img_lib = items[INDEX]["image"][0, 0].numpy()

    # 3. the MONAI-style transform, given the sample's field seed
    t = RandDRDMd(("image", "label"), checkpoint=checkpoint, settings=settings, spacing=spacing)
    out = t.deform_with({"image": img[None], "label": lab[None]}, LEVEL, sample_seed(SEED, "field", LEVEL, INDEX))
    ddf_t, lab_t, img_t = t.last_ddf.numpy(), out["label"][0], out["image"][0]

    assert ddf_cli.shape == ddf_lib.shape == ddf_t.shape == (2, *shape)
    assert np.abs(ddf_lib).max() > 0.05                                    # a real deformation, not zeros
    np.testing.assert_allclose(ddf_lib, ddf_cli, atol=1e-5)
    np.testing.assert_allclose(ddf_t, ddf_cli, atol=1e-5)
    assert np.array_equal(lab_lib, lab_cli) and np.array_equal(lab_t, lab_cli)
    # the warped images too: one interpolation, the setting's (bicubic for the release's weights)
    assert np.abs(img_lib - img).max() > 1.0                                # the image did move
    np.testing.assert_allclose(img_lib, img_cli, atol=1e-3, rtol=1e-5)
    np.testing.assert_allclose(img_t, img_cli, atol=1e-3, rtol=1e-5)
    from drdm import spatial
    mode = "bicubic" if settings == "release" else "linear"
    again = spatial.warp(torch.from_numpy(img)[None, None], torch.from_numpy(ddf_cli)[None], mode=mode,
                         padding_mode="border")[0, 0].numpy()
    np.testing.assert_allclose(img_cli, again, atol=1e-3, rtol=1e-5)
    # another index of the same run is another sample
    assert np.abs(items[0]["ddf"][0].numpy() - ddf_lib).max() > 1e-3


def test_task_copies_are_augment_through_the_input_grid():
    """The segmentation tasks' DRDM copies (make_copies) are sampling.augment through the
    slice's InputGrid with the same seed: the tasks take the same door as drdm augment."""
    from drdm.tasks.augcache import make_copies
    net = load("phantom2d")
    img, lab = cardiac_phantom(2, 40)
    img, lab = torch.from_numpy(img)[None, None], torch.from_numpy(lab)[None, None]
    x, y = make_copies("drdm", img, lab, 4, SEED, net=net, levels=(LEVEL, LEVEL + 5), settings="drdm")
    grid = InputGrid((40, 40), None, network_grid(net))
    items = list(augment(net, img, lab, [LEVEL, LEVEL + 5], 2, grid=grid, seed=SEED, settings="drdm"))
    assert x.shape == (4, 1, 40, 40) and [(i["level"], i["index"]) for i in items] == [(10, 0), (10, 1), (15, 0), (15, 1)]
    torch.testing.assert_close(x, torch.cat([i["image"] for i in items]), atol=1e-6, rtol=0)
    assert torch.equal(y, torch.cat([i["label"] for i in items]))
    assert (x[0] - x[1]).abs().max() > 1e-3
