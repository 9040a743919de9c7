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


def test_panel_copies_are_the_cached_ones_and_the_figure_shows_each(tmp_path):
    """panel_copies: every copy in the panel is one the run's cache holds for that slice (so one its U-Nets
    trained on): DRDM's are copy 0 of the protocol's first two levels, BigAug's and elastic's the slice's first
    two. The CLI's writer lays them out one axis per image, DRDM's titled with their T', each structure outlined
    on its own, and saves a PNG."""
    import dataclasses
    from drdm.cli.fewshot import write_copies_figure
    from drdm.data.crops import prepare_slices
    from drdm.phantoms import phantom_records
    from drdm.tasks.augcache import AugCache, copies, panel_copies
    from drdm.tasks.fewshot import PROTOCOLS
    from drdm.tasks.fewshot_report import copies_figure
    prot = dataclasses.replace(PROTOCOLS["phantom-ci"], n_aug=4, drdm_levels=(4, 8, 12, 16), low_levels=(6, 9))
    records = phantom_records("cardiac", 2, 32, 3, phases=("ED", "ES"))
    example = prepare_slices(records, **prot.prep)[0]
    net = load_model("phantom2d")
    methods = ("bigaug", "elastic", "drdm", "drdm_low")
    panel = panel_copies(example, prot, methods, net=net)
    assert list(panel) == ["original", *methods]
    cache = AugCache(tmp_path / "cache")
    # which of the cached copies the panel shows: copies are spread over the levels in order
    shown = {"bigaug": [0, 1], "elastic": [0, 1], "drdm": [0, 1], "drdm_low": [0, 2]}
    for m in methods:
        cached_x, cached_y = copies(cache, m, [example], prot, net=net, progress=False)[0]
        assert cached_x.shape == (prot.n_aug, 1, 32, 32)
        torch.testing.assert_close(panel[m][0], cached_x[shown[m]], atol=1e-5, rtol=0)
        assert torch.equal(panel[m][1], cached_y[shown[m]].to(panel[m][1].dtype))
    fig = copies_figure(records, {"sets": {"d0": [example.subject]}}, prot, net)
    assert len(fig.axes) == 1 + 4 * 2
    assert [ax.get_title() for ax in fig.axes[1:]] == [
        "BigAug", "BigAug", "Elastic", "Elastic", "DRDM (T' 4/8/12/16)\nT' 4", "DRDM (T' 4/8/12/16)\nT' 8",
        "DRDM (T' 6/9)\nT' 6", "DRDM (T' 6/9)\nT' 9"]
    assert len(fig.axes[0].collections) == 3                 # the original: one outline per structure (RV, Myo, LV)
    png = tmp_path / "copies.png"
    write_copies_figure(records, {"sets": {"d0": [example.subject]}}, prot, "phantom2d", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
