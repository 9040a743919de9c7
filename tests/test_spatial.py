"""drdm.spatial: exact shifts, Eq. 5 composition, Jacobians, labels, units, bad input."""
import numpy as np
import pytest
import torch

from drdm import spatial as sp

SHAPES = [(24, 17), (12, 9, 10), (32, 32), (16, 16, 16)]


def _affine_field(A, b, shape):
    """u(x) = (A - I) x + b on a grid, voxels; returns (1, ndim, *shape) float64."""
    x = sp.identity_grid(shape, dtype=torch.float64)
    n = len(shape)
    M = torch.as_tensor(A, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)
    u = torch.einsum("ij,j...->i...", M, x) + torch.as_tensor(b, dtype=torch.float64).view(n, *[1] * n)
    return u[None]


@pytest.mark.parametrize("shape", SHAPES)
def test_zero_field_is_exact_identity(shape):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, *shape, generator=g)
    zero = torch.zeros(2, len(shape), *shape)
    assert torch.equal(sp.warp(img, zero), img)
    phi = torch.randn(2, len(shape), *shape, generator=g)
    assert torch.equal(sp.compose(phi, zero), phi)
    assert torch.equal(sp.compose(zero, phi), phi)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 3, -2])
def test_constant_shift_moves_by_exactly_k_voxels(shape, k):
    n = len(shape)
    img = torch.rand(1, 2, *shape, generator=torch.Generator().manual_seed(1))
    for axis in range(n):
        u = torch.zeros(1, n, *shape)
        u[:, axis] = k
        out = sp.warp(img, u)
        # pull-back: out(x) = img(x + k e_axis)
        src = [slice(None)] * (n + 2)
        dst = [slice(None)] * (n + 2)
        if k > 0:
            src[axis + 2], dst[axis + 2] = slice(k, None), slice(0, -k)
        else:
            src[axis + 2], dst[axis + 2] = slice(0, k), slice(-k, None)
        assert torch.equal(out[tuple(dst)], img[tuple(src)])
        # the uncovered band is zero with zeros padding
        band = [slice(None)] * (n + 2)
        band[axis + 2] = slice(-k, None) if k > 0 else slice(0, -k)
        assert torch.count_nonzero(out[tuple(band)]) == 0
        # nearest and label modes move exactly too
        assert torch.equal(sp.warp(img, u, mode="nearest")[tuple(dst)], img[tuple(src)])


def test_subvoxel_linear_shift_matches_hand_value():
    img = torch.arange(10.0).view(1, 1, 10, 1).expand(1, 1, 10, 4).contiguous()
    u = torch.zeros(1, 2, 10, 4)
    u[:, 0] = 0.25
    out = sp.warp(img, u)
    assert torch.allclose(out[0, 0, :9, 0], torch.arange(9.0) + 0.25, atol=1e-6)


def test_bicubic_shift_and_3d_refusal():
    img = torch.rand(1, 1, 16, 16)
    u = torch.zeros(1, 2, 16, 16)
    u[:, 1] = 2
    assert torch.allclose(sp.warp(img, u, mode="bicubic")[..., :-3], img[..., 2:-1], atol=1e-6)
    with pytest.raises(ValueError, match="bicubic"):
        sp.warp(torch.rand(1, 1, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4), mode="bicubic")


def test_warp_matches_scipy_map_coordinates():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 1, 20, 15, 11, generator=g, dtype=torch.float64)
    u = torch.randn(1, 3, 20, 15, 11, generator=g, dtype=torch.float64) * 2
    ours = sp.warp(img, u)[0, 0].numpy()
    coords = (sp.identity_grid(img.shape[2:], dtype=torch.float64) + u[0]).numpy()
    ref = scipy_ndimage.map_coordinates(img[0, 0].numpy(), coords, order=1, mode="constant", cval=0.0)
    # scipy treats samples within half a voxel outside as "constant" differently; compare inside
    inside = np.all([(coords[i] >= 0) & (coords[i] <= s - 1) for i, s in enumerate(img.shape[2:])], axis=0)
    assert np.abs(ours - ref)[inside].max() < 1e-9


@pytest.mark.parametrize("ndim", [2, 3])
def test_compose_of_affine_fields_is_affine_product(ndim):
    g = torch.Generator().manual_seed(ndim)
    shape = (40,) * ndim
    A1 = torch.eye(ndim) + 0.05 * torch.randn(ndim, ndim, generator=g)
    A2 = torch.eye(ndim) + 0.05 * torch.randn(ndim, ndim, generator=g)
    b1, b2 = torch.randn(ndim, generator=g), torch.randn(ndim, generator=g)
    a = _affine_field(A1, b1, shape)
    b = _affine_field(A2, b2, shape)
    # <a o b>(x) = b(x + a(x)) + a(x): the map x -> A2 (A1 x + b1) + b2
    expected = _affine_field(A2.double() @ A1.double(), A2.double() @ b1.double() + b2.double(), shape)
    got = sp.compose(a, b)
    inner = tuple([slice(None), slice(None)] + [slice(8, -8)] * ndim)
    # linear interpolation of an affine field is exact up to float64 round-off
    assert torch.allclose(got[inner], expected[inner], atol=1e-9)


@pytest.mark.parametrize("ndim", [2, 3])
def test_jacobian_of_affine_field_is_its_determinant(ndim):
    g = torch.Generator().manual_seed(10 + ndim)
    A = torch.eye(ndim) + 0.3 * torch.randn(ndim, ndim, generator=g)
    u = _affine_field(A, torch.zeros(ndim), (12,) * ndim)
    det = sp.jacobian_det(u)
    assert torch.allclose(det, torch.linalg.det(A.double()).expand_as(det), atol=1e-10)


def test_fold_gives_negative_determinant_where_the_fold_is():
    H = 32
    x = torch.arange(H, dtype=torch.float64)
    # along axis 0: u0 = -2 * bump(x0): the map x + u folds where du0/dx0 < -1
    bump = 4 * torch.exp(-((x - 16) / 3) ** 2)
    u = torch.zeros(1, 2, H, H, dtype=torch.float64)
    u[0, 0] = bump.view(H, 1)
    det = sp.jacobian_det(u)[0]
    d_bump = torch.from_numpy(np.gradient(bump.numpy()))
    expected_neg = (1 + d_bump) < 0
    assert expected_neg.any()
    assert torch.equal((det < 0)[:, 5], expected_neg)
    frac = sp.negative_jacobian_fraction(u)
    assert frac.item() == pytest.approx(expected_neg.double().mean().item())


def test_jacobian_matches_numpy_gradient_definition():
    u = torch.randn(1, 3, 7, 8, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    un = u[0].numpy()
    J = np.zeros((3, 3) + un.shape[1:])
    for i in range(3):
        gr = np.gradient(un[i])
        for j in range(3):
            J[i, j] = gr[j] + (i == j)
    ref = np.linalg.det(np.moveaxis(J, (0, 1), (-2, -1)))
    assert np.allclose(sp.jacobian_det(u)[0].numpy(), ref)


@pytest.mark.parametrize("shape", [(30, 20), (10, 12, 8)])
def test_label_warp_never_invents_values(shape):
    g = torch.Generator().manual_seed(7)
    lab = torch.randint(0, 4, (2, 1, *shape), generator=g) * 3     # values {0, 3, 6, 9}
    lab[lab == 6] = 0                                               # keep a gap: {0, 3, 9}
    u = torch.randn(2, len(shape), *shape, generator=g) * 3
    for mode in ("label", "nearest"):
        out = sp.warp(lab, u, mode=mode)
        assert out.dtype == lab.dtype
        assert set(out.unique().tolist()) <= set(lab.unique().tolist())
    # a linear warp of the same map would invent values (the reason for 'label')
    lin = sp.warp(lab.float(), u)
    assert not set(lin.unique().tolist()) <= set(lab.unique().tolist())


def test_label_mode_is_a_soft_majority_vote():
    lab = torch.zeros(1, 1, 6, 6, dtype=torch.int64)
    lab[..., 3:] = 2
    u = torch.zeros(1, 2, 6, 6)
    u[:, 1] = 0.6          # 60 % of the way to the right neighbour
    out = sp.warp(lab, u, mode="label")
    # column 2 reads 0.4 of label 0 and 0.6 of label 2; column 5 reads 0.4 of label 2 and
    # 0.6 of the outside, which counts for no label
    assert out[0, 0, 0].tolist() == [0, 0, 2, 2, 2, 2]
    u[:, 1] = 7            # everything outside: the smallest label (background)
    assert torch.count_nonzero(sp.warp(lab, u, mode="label")) == 0


def test_magnitude_stats_percent_of_side():
    u = torch.zeros(1, 2, 50, 100)
    u[:, 0] = 5      # 10 % of axis 0
    m = sp.magnitude_stats(u)
    assert m["mean_pct"].item() == pytest.approx(10.0)
    u[:, 1, 0, 0] = 100 * 0.2   # one voxel also 20 % along axis 1
    assert sp.magnitude_stats(u)["max_pct"].item() == pytest.approx((10 ** 2 + 20 ** 2) ** 0.5, rel=1e-6)


def test_resize_ddf_reproduces_affine_fields():
    A = torch.tensor([[1.1, 0.05], [-0.02, 0.95]], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0], dtype=torch.float64)
    small = _affine_field(A, b, (17, 9))
    big = sp.resize_ddf(small, (33, 25))
    # on the fine grid, the same physical map: x' = x * (old-1)/(new-1)
    s = torch.tensor([16 / 32, 8 / 24], dtype=torch.float64)
    A_fine = torch.diag(1 / s) @ A @ torch.diag(s)
    expected = _affine_field(A_fine, b / s, (33, 25))
    assert torch.allclose(big, expected, atol=1e-9)


def test_unit_converters_round_trip_and_match_grid_sample():
    u = torch.randn(2, 2, 16, 24, dtype=torch.float64)
    for fwd, inv in [(sp.voxels_to_normalized, sp.normalized_to_voxels),
                     (sp.voxels_to_fraction, sp.fraction_to_voxels)]:
        assert torch.allclose(inv(fwd(u)), u)
    assert torch.allclose(sp.voxels_to_fraction(u)[:, 1], u[:, 1] / 24)
    # a grid_sample grid built from ddf_to_sampling_grid gives the same warp
    img = torch.rand(2, 1, 16, 24, dtype=torch.float64)
    grid = sp.ddf_to_sampling_grid(u)
    ref = torch.nn.functional.grid_sample(img, grid, align_corners=True)
    assert torch.allclose(sp.warp(img, u), ref, atol=1e-9)


def test_gradients_flow_through_warp():
    img = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    u = (torch.randn(1, 2, 8, 8, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: sp.warp(a, b), (img, u), atol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda: sp.warp(torch.rand(1, 1, 8, 8), torch.zeros(1, 3, 8, 8)), r"ddf must have shape \(B, 2, H, W\)"),
    (lambda: sp.warp(torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8, 9)), "spatial shape"),
    (lambda: sp.warp(torch.rand(1, 8, 8), torch.zeros(1, 2, 8, 8)), r"image must have shape \(B, C, H, W\)"),
    (lambda: sp.warp(torch.ones(1, 1, 8, 8, dtype=torch.int64), torch.zeros(1, 2, 8, 8)), "floating-point"),
    (lambda: sp.warp(torch.rand(1, 1, 8, 8), torch.full((1, 2, 8, 8), float("nan"))), "NaN"),
    (lambda: sp.warp(torch.rand(1, 1, 8, 8), torch.zeros(2, 8, 8)), "ddf must have shape"),
    (lambda: sp.warp(torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), mode="cubic"), "mode must be one of"),
    (lambda: sp.warp(torch.rand(3, 1, 8, 8), torch.zeros(2, 2, 8, 8)), "batch size"),
    (lambda: sp.compose(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 7)), "b must have spatial shape"),
    (lambda: sp.jacobian_det(torch.zeros(1, 2, 8)), "ddf must have shape"),
    (lambda: sp.warp(torch.rand(1, 1, 4, 4), np.zeros((1, 2, 4, 4))), "torch.Tensor"),
])
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
