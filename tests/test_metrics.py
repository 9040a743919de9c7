"""drdm.metrics: hand-computed overlap and surface distances, edge cases, folding."""
import math

import numpy as np
import pytest
import torch

from drdm import metrics as M
from drdm import spatial


def _squares():
    """Two 8x8 squares, the second shifted 2 px down axis 0 (hand-computed below)."""
    a = np.zeros((16, 16), np.int64)
    b = np.zeros((16, 16), np.int64)
    a[4:12, 4:12] = 1
    b[6:14, 4:12] = 1
    return a, b


def test_squares_overlap_by_hand():
    a, b = _squares()
    # overlap 6x8 = 48 of 64 each
    assert M.dice(a, b, 1) == pytest.approx(0.75)
    assert M.sensitivity(a, b, 1) == pytest.approx(0.75)
    assert M.precision(a, b, 1) == pytest.approx(0.75)
    assert M.confusion(a, b, 1) == (48, 16, 16)
    assert M.dice(a, b) == {1: pytest.approx(0.75)}          # labels=None: every non-zero value


def test_squares_surface_distances_by_hand():
    a, b = _squares()
    # each surface is the 28-voxel ring. A -> B: top row 8 x 2; bottom row 0,1,2,2,2,2,1,0 (=10);
    # side columns: row 5 at distance 1 on each side, rows 6..10 on B's sides (0). Sum 28; B -> A mirrors it.
    d_ab, d_ba = M.surface_distances(a, b)
    assert d_ab.size == d_ba.size == 28
    assert d_ab.sum() == pytest.approx(28.0) and d_ba.sum() == pytest.approx(28.0)
    assert M.average_symmetric_surface_distance(a, b) == pytest.approx(1.0)
    assert M.hausdorff_distance(a, b) == pytest.approx(2.0)
    assert M.hausdorff_distance(a, b, percentile=95) == pytest.approx(2.0)
    # anisotropic: 3 mm along the shift axis. Top row 8 x 6; bottom row 0,1,2,3,3,2,1,0 (=12,
    # horizontal wins); row 5 of each side: 3. Sum 66 per direction.
    assert M.average_symmetric_surface_distance(a, b, spacing=(3.0, 1.0)) == pytest.approx(66 / 28)
    assert M.hausdorff_distance(a, b, spacing=(3.0, 1.0)) == pytest.approx(6.0)
    s = M.surface_metrics(a, b, spacing=(3.0, 1.0))
    assert s["asd"] == pytest.approx(66 / 28) and s["hd"] == pytest.approx(6.0)


def test_surface_is_mask_minus_full_connectivity_erosion():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    assert M.surface(m).sum() == 25 - 9
    plus = np.zeros((5, 5), bool)
    plus[2, 1:4] = plus[1:4, 2] = True
    assert M.surface(plus).sum() == 5          # full connectivity: even the centre erodes away
    edge = np.ones((4, 4), bool)               # outside the array counts as background
    assert M.surface(edge).sum() == 16 - 4


def _ball(shape, centre_mm, radius_mm, spacing):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm)) <= radius_mm ** 2


def test_sphere_vs_shifted_sphere_with_anisotropic_spacing():
    spacing = (1.0, 1.0, 2.0)
    shape = (36, 36, 18)
    a = _ball(shape, (17.5, 17.5, 17.0), 10.0, spacing)
    b = _ball(shape, (17.5, 17.5, 21.0), 10.0, spacing)        # shifted 4 mm = 2 voxels along axis 2
    # continuous spheres of radius R shifted by d: HD = d, ASD = d/2 (mean |cos| over a sphere)
    assert M.hausdorff_distance(a, b, spacing) == pytest.approx(4.0, abs=0.6)
    assert M.average_symmetric_surface_distance(a, b, spacing) == pytest.approx(2.0, abs=0.4)
    # in voxels the same shift is 2
    assert M.hausdorff_distance(a, b) == pytest.approx(2.0, abs=0.5)
    # spacing also accepts one number for all axes
    assert M.hausdorff_distance(a, a, 2.0) == 0.0


def _brute(a, b, spacing):
    sa, sb = M.surface(a), M.surface(b)
    pa = np.argwhere(sa) * np.asarray(spacing)
    pb = np.argwhere(sb) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return d.min(1), d.min(0)


@pytest.mark.parametrize("shape,spacing", [((20, 17), (1.0, 1.0)), ((20, 17), (0.7, 2.5)),
                                           ((9, 10, 11), (1.5, 1.0, 3.0))])
def test_surface_distances_equal_brute_force(shape, spacing):
    rng = np.random.default_rng(len(shape))
    from scipy import ndimage
    a = ndimage.binary_opening(rng.random(shape) > 0.45)
    b = ndimage.binary_opening(rng.random(shape) > 0.5)
    d_ab, d_ba = M.surface_distances(a, b, spacing)
    r_ab, r_ba = _brute(a, b, spacing)
    np.testing.assert_allclose(d_ab, r_ab, rtol=1e-6)
    np.testing.assert_allclose(d_ba, r_ba, rtol=1e-6)
    pooled = np.concatenate([r_ab, r_ba])
    assert M.average_symmetric_surface_distance(a, b, spacing) == pytest.approx(pooled.mean())
    assert M.hausdorff_distance(a, b, spacing) == pytest.approx(pooled.max())
    assert M.hausdorff_distance(a, b, spacing, percentile=95) == pytest.approx(
        max(np.percentile(r_ab, 95), np.percentile(r_ba, 95)))


def test_edge_cases_are_documented_values():
    z = np.zeros((8, 8), np.int64)
    one = z.copy()
    one[2:5, 2:5] = 1
    # both empty: perfect agreement
    assert M.dice(z, z, 1) == 1.0 and M.sensitivity(z, z, 1) == 1.0 and M.precision(z, z, 1) == 1.0
    assert M.average_symmetric_surface_distance(z, z) == 0.0 and M.hausdorff_distance(z, z) == 0.0
    # one empty: Dice 0, the undefined ratio 0, distances inf
    assert M.dice(z, one, 1) == 0.0 and M.dice(one, z, 1) == 0.0
    assert M.precision(z, one, 1) == 0.0 and M.sensitivity(one, z, 1) == 0.0
    assert math.isinf(M.average_symmetric_surface_distance(z, one))
    assert math.isinf(M.hausdorff_distance(one, z, percentile=95))
    assert M.dice(z, z) == {}                                  # no labels present


def test_torch_and_batched_inputs():
    a, b = _squares()
    ta, tb = torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]
    assert M.dice(ta, tb, [1]) == {1: pytest.approx(0.75)}
    assert M.average_symmetric_surface_distance(ta, tb) == pytest.approx(1.0)
    rows = M.label_metrics(ta, tb, labels=(1, 2))
    assert rows[1]["dice"] == pytest.approx(0.75) and rows[1]["hd"] == pytest.approx(2.0)
    assert rows[2]["dice"] == 1.0 and rows[2]["asd"] == 0.0            # absent from both
    with pytest.raises(ValueError, match="shapes differ"):
        M.dice(a, b[:8])
    with pytest.raises(ValueError, match="integer"):
        M.dice(a * 0.5, b)


def test_negative_jacobian_pct_delegates_to_spatial():
    u = torch.zeros(2, 2, 16, 16)
    assert M.negative_jacobian_pct(u).tolist() == [0.0, 0.0]
    u[1, 0] = torch.linspace(0, -30, 16)[:, None]                       # du0/dx0 = -2: folds everywhere
    pct = M.negative_jacobian_pct(u)
    assert pct[0] == 0 and pct[1] == pytest.approx(100.0)
    torch.testing.assert_close(pct, 100 * spatial.negative_jacobian_fraction(u.double()))
    assert M.negative_jacobian_pct(u.numpy())[1] == pytest.approx(100.0)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 6, 7, 9])
def test_wall_thickness_of_a_band_is_its_width(width):
    m = np.zeros((40, 48), bool)
    m[10:10 + width, 5:40] = True
    t = M.wall_thickness(m)
    assert t.size >= 35                                          # the midline, end to end (on the 2x grid)
    assert set(np.unique(t)) == {float(width)}


def test_wall_thickness_of_a_ring_and_edge_cases():
    yy, xx = np.mgrid[:96, :96]
    r = np.hypot(yy - 47.5, xx - 47.5)
    ring = (r >= 14) & (r < 21)                                  # a 7 px wall
    t = M.wall_thickness(torch.from_numpy(ring))
    assert 6.5 <= np.median(t) <= 7.5
    thin = M.wall_thickness((r >= 14) & (r < 17))                # 3 px: half as thick
    assert np.median(thin) < 0.6 * np.median(t)
    assert M.wall_thickness(np.zeros((8, 8))).size == 0
    edge = np.zeros((10, 10), bool)
    edge[:, :3] = True                                           # outside the array counts as outside
    assert set(np.unique(M.wall_thickness(edge))) == {3.0}
    with pytest.raises(ValueError, match="2-D"):
        M.wall_thickness(np.zeros((4, 4, 4)))
