"""drdm.tasks.augcache.make_copies, DRDM branch: labels stay labels; copies by a trained model deform
the slice yet keep every structure, deeper levels deform more, and the seed fixes the copies."""
import pytest
import torch

from drdm import load as load_model
from drdm.phantoms import cardiac_dataset
from drdm.tasks.augcache import make_copies


pytestmark = pytest.mark.usefixtures("one_thread")


def test_drdm_augmentation_is_label_safe(drdm_ckpt):
    """An untrained network (it may push structures out of the slice): labels stay labels."""
    from drdm.phantoms import cardiac_dataset
    from drdm import load as load_model
    img, lab, _ = cardiac_dataset(1, 32)
    x, y = make_copies("drdm", img, lab, 3, 0, net=load_model(drdm_ckpt[2]), levels=(2, 3))
    assert x.shape == (3, 1, 32, 32) and y.dtype == lab.dtype
    assert set(y.unique().tolist()) <= set(lab.unique().tolist())


def test_drdm_copies_deform_the_slice_yet_keep_every_structure():
    """The shipped phantom2d model, level 10, 32 px: every copy moves the image and some label pixels,
    keeps all four labels and each structure's area within 40 % (at most 24 % seen over 32 copies,
    seeds 0-7); a structure that vanished or doubled fails. Copies of a deeper level move the image more."""
    img, lab, _ = cardiac_dataset(1, 32)
    net = load_model("phantom2d")
    x, y = make_copies("drdm", img, lab, 4, 0, net=net, levels=(10,))
    assert x.shape == y.shape == (4, 1, 32, 32) and y.dtype == lab.dtype
    assert (x - img).abs().flatten(1).mean(1).min() > 0.01                  # the image is deformed
    assert (y != lab).flatten(1).sum(1).min() > 0                           # and so is its label map
    for copy in y:
        assert set(copy.unique().tolist()) == set(lab.unique().tolist()) == {0, 1, 2, 3}
    for v in (1, 2, 3):
        area = (lab == v).sum().item()
        areas = (y == v).flatten(1).sum(1)
        assert ((areas - area).abs() <= 0.4 * area).all(), (v, area, areas.tolist())
    # copies are spread over the levels in order: two of level 5, then two of level 40
    x, _ = make_copies("drdm", img, lab, 4, 0, net=net, levels=(5, 40))
    moved = (x - img).abs().flatten(1).mean(1)
    assert moved[2:].min() > 2 * moved[:2].max(), moved.tolist()


def test_drdm_copies_follow_the_seed():
    """The same seed gives the same copies bit for bit; another seed gives other images and labels."""
    img, lab, _ = cardiac_dataset(1, 32)
    net = load_model("phantom2d")
    x, y = make_copies("drdm", img, lab, 3, 0, net=net, levels=(10,))
    x2, y2 = make_copies("drdm", img, lab, 3, 0, net=net, levels=(10,))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, y3 = make_copies("drdm", img, lab, 3, 1, net=net, levels=(10,))
    assert not torch.equal(x, x3) and not torch.equal(y, y3)
