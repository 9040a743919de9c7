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


def test_panel_drdm_copies_are_the_cached_ones_and_the_figure_shows_each(tmp_path):
    """panel_copies: DRDM's panel copies are copy 0 of the protocol's first two levels, so they equal the
    first two of the slice's full set as the run's cache makes it (one copy per level); every method gets its
    two copies. The CLI's writer lays them out one axis per image, titled by method, and saves a PNG."""
    import dataclasses
    from drdm.cli.fewshot import write_copies_figure
    from drdm.data.crops import prepare_slices
    from drdm.phantoms import phantom_records
    from drdm.tasks.augcache import copy_params, copy_seed, panel_copies
    from drdm.tasks.fewshot import PROTOCOLS
    from drdm.tasks.fewshot_report import copies_figure
    prot = dataclasses.replace(PROTOCOLS["phantom-ci"], n_aug=4, drdm_levels=(4, 8, 12, 16), low_levels=(6, 9))
    records = phantom_records("cardiac", 2, 32, 3, phases=("ED", "ES"))
    example = prepare_slices(records, **prot.prep)[0]
    net = load_model("phantom2d")
    panel = panel_copies(example, prot, ("bigaug", "elastic", "drdm", "drdm_low"), net=net)
    assert list(panel) == ["original", "bigaug", "elastic", "drdm", "drdm_low"]
    assert all(x.shape == y.shape == (2, 1, 32, 32) for x, y in list(panel.values())[1:])
    img, lab = (torch.from_numpy(a)[None, None] for a in (example.image, example.label))
    for m in ("drdm", "drdm_low"):
        full = make_copies("drdm", img, lab, prot.n_aug, copy_seed(prot.aug_seed, "drdm", example), net=net,
                           levels=prot.levels(m), settings=copy_params(m, prot, net=net)["settings"])
        per = prot.n_aug // len(prot.levels(m))                    # copies per level, in level order
        torch.testing.assert_close(panel[m][0], full[0][::per][:2], atol=1e-5, rtol=0)
        assert torch.equal(panel[m][1], full[1][::per][:2])
    fig = copies_figure(records, {"sets": {"d0": [example.subject]}}, prot, net)
    assert len(fig.axes) == 1 + 4 * 2
    assert [ax.get_title() for ax in fig.axes[1::2]] == ["BigAug", "Elastic", "DRDM (T' 4/8/12/16)", "DRDM (T' 6/9)"]
    assert len(fig.axes[0].collections) == 3                 # the original: one outline per structure (LV, Myo, RV)
    png = tmp_path / "copies.png"
    write_copies_figure(records, {"sets": {"d0": [example.subject]}}, prot, "phantom2d", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
