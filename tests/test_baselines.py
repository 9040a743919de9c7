"""drdm.baselines: BigAug, elastic and MRBS are label-safe, seeded, exact at zero, smooth."""
import pytest
import torch

from drdm import baselines as B
from drdm import spatial
from drdm.phantoms import cardiac_dataset, thorax_dataset

NEUTRAL = dict(sharpen_sigma=(0, 0), sharpen_alpha=(0, 0), blur_sigma=(0, 0), noise_std=(0, 0), brightness=0,
               gamma=(1, 1), intensity_scale=0, intensity_shift=0, rotate=0, scale=(1, 1), elastic_magnitude=0)
SPATIAL_ONLY = {k: v for k, v in NEUTRAL.items() if k not in ("rotate", "scale", "elastic_magnitude")}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cardiac():
    img, lab, _ = cardiac_dataset(3, 32)
    return img, lab


@pytest.fixture(scope="module")
def thorax():
    img, lab, _ = thorax_dataset(1, 24)
    return img, lab


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("which", ["cardiac", "thorax"])
def test_bigaug_and_elastic_are_label_safe(which, request):
    img, lab = request.getfixturevalue(which)
    for fn in (lambda i, l, g: B.BigAug(p=1.0)(i, l, g), lambda i, l, g: B.elastic(i, l, g, magnitude=0.08)):
        out, olab = fn(img, lab, _gen(0))
        assert out.shape == img.shape and out.dtype == img.dtype
        assert olab.shape == lab.shape and olab.dtype == lab.dtype
        assert set(olab.unique().tolist()) <= set(lab.unique().tolist())
        assert torch.isfinite(out).all()
        assert not torch.equal(out, img)


def test_spatial_transforms_move_image_and_label_together(cardiac):
    _, lab = cardiac
    as_image = lab.float()                           # a piecewise-constant image equal to the label map
    aug = B.BigAug(p=1.0, **SPATIAL_ONLY)
    for seed in range(3):
        out, olab = aug(as_image, lab, _gen(seed))
        agree = (out.round().long() == olab).float().mean().item()
        assert agree > 0.93, agree
        assert (olab != lab).any()


def test_bigaug_zoom_direction_and_rotation():
    lab = torch.zeros(1, 1, 33, 33, dtype=torch.long)
    lab[:, :, 12:21, 12:21] = 1                      # centred 9x9 square
    zoom = B.BigAug(p=1.0, **{**NEUTRAL, "scale": (2.0, 2.0)})
    _, big = zoom(lab.float(), lab, _gen(0))
    assert 3.0 < big.sum().item() / lab.sum().item() < 5.0      # zoom 2 enlarges the content ~4x
    rot = B.BigAug(p=1.0, **{**NEUTRAL, "rotate": 20.0})
    for seed in range(20):
        _, r, params = rot(lab.float(), lab, _gen(seed), return_params=True)
        assert abs(params[0]["angle"]) <= 20 * 3.1416 / 180
        if abs(params[0]["angle"]) > 0.2:                         # > 11 degrees: corners move
            break
    assert abs(r.sum().item() - lab.sum().item()) <= 8            # a rotation keeps the area
    assert not torch.equal(r, lab)


def test_determinism_per_seed(cardiac, thorax):
    img, lab = cardiac
    for fn in (B.BigAug(), lambda i, l, g: B.elastic(i, l, g)):
        a = fn(img, lab, _gen(7))
        b = fn(img, lab, _gen(7))
        c = fn(img, lab, _gen(8))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])
    timg, tlab = thorax
    a = B.BigAug(p=1.0)(timg, tlab, _gen(3))
    b = B.BigAug(p=1.0)(timg, tlab, _gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.testing.assert_close(B.mrbs_field((20, 24), _gen(1)), B.mrbs_field((20, 24), _gen(1)), rtol=0, atol=0)
    assert not torch.equal(B.mrbs_field((20, 24), _gen(1)), B.mrbs_field((20, 24), _gen(2)))


def test_identity_when_magnitudes_are_zero(cardiac, thorax):
    img, lab = cardiac
    for aug in (B.BigAug(p=0.0), B.BigAug(p=1.0, **NEUTRAL)):
        out, olab = aug(img, lab, _gen(0))
        assert torch.equal(out, img) and torch.equal(olab, lab)
    out, olab, ddf = B.elastic(img, lab, _gen(0), magnitude=0.0, return_ddf=True)
    assert torch.equal(ddf, torch.zeros_like(ddf))
    assert torch.equal(out, img) and torch.equal(olab, lab)
    for shape, (im, lb) in (((32, 32), cardiac), ((24, 24, 24), thorax)):
        for combine in ("sum", "compose"):
            u = B.mrbs_field(shape, _gen(0), magnitudes=0.0, combine=combine)
            assert torch.equal(u, torch.zeros_like(u))
        assert torch.equal(spatial.warp(im, u.expand(im.shape[0], *u.shape[1:])), im)
        assert torch.equal(spatial.warp(lb, u.expand(lb.shape[0], *u.shape[1:]), mode="label"), lb)


def test_bspline_reproduces_constant_and_linear_fields():
    # partition of unity and linear precision locate the knots: c_k at (k - 1) s
    shape, n = (25, 19), (7, 6)
    s = [(S - 1) / (m - 3) for S, m in zip(shape, n)]
    k0 = (torch.arange(n[0], dtype=torch.float64) - 1) * s[0]
    k1 = (torch.arange(n[1], dtype=torch.float64) - 1) * s[1]
    coeffs = torch.stack([0.3 * k0[:, None] + 0 * k1[None] + 2.0, -0.5 * k1[None] + 0 * k0[:, None]])[None]
    u = B.bspline_upsample(coeffs, shape)
    x0, x1 = spatial.identity_grid(shape, dtype=torch.float64)
    torch.testing.assert_close(u[0, 0], 0.3 * x0 + 2.0)
    torch.testing.assert_close(u[0, 1], -0.5 * x1)
    c3 = torch.full((1, 3, 5, 6, 4), 1.5, dtype=torch.float64)
    torch.testing.assert_close(B.bspline_upsample(c3, (9, 10, 8)), torch.full((1, 3, 9, 10, 8), 1.5,
                                                                              dtype=torch.float64))
    with pytest.raises(ValueError, match=">= 4 control points"):
        B.bspline_upsample(torch.zeros(1, 2, 3, 5), (8, 8))


@pytest.mark.parametrize("shape", [(64, 64), (24, 24, 24)])
def test_mrbs_is_smooth_and_scales_with_magnitude(shape):
    levels = tuple(s / 2 for s in (shape[0] / 2, shape[0] / 4, shape[0] / 8))
    u1 = B.mrbs_field(shape, _gen(0), levels=levels, magnitudes=[0.1 * s for s in levels], batch=4)
    u2 = B.mrbs_field(shape, _gen(0), levels=levels, magnitudes=[0.2 * s for s in levels], batch=4)
    assert u1.shape == (4, len(shape), *shape)
    torch.testing.assert_close(u2, 2 * u1)                        # linear in the magnitudes (same draws)
    assert spatial.negative_jacobian_fraction(u2).max().item() == 0.0
    assert 0.05 * levels[0] < u1.abs().amax().item() < 0.35 * sum(levels)
    # fine levels make a rougher field than coarse levels at the same magnitude
    coarse = B.mrbs_field(shape, _gen(1), levels=(shape[0] / 2,), magnitudes=2.0)
    fine = B.mrbs_field(shape, _gen(1), levels=(4.0,), magnitudes=2.0)
    rough = [(f[:, 0, 1:] - f[:, 0, :-1]).abs().mean().item() for f in (coarse, fine)]
    assert rough[1] > 2 * rough[0]
    # composing the levels is close to summing them for small fields
    uc = B.mrbs_field(shape, _gen(0), levels=levels, magnitudes=[0.05 * s for s in levels], combine="compose")
    us = B.mrbs_field(shape, _gen(0), levels=levels, magnitudes=[0.05 * s for s in levels])
    assert (uc - us).abs().max().item() < 0.2 * us.abs().max().item()


def test_mrbs_validates_arguments():
    with pytest.raises(ValueError, match="magnitudes"):
        B.mrbs_field((16, 16), levels=(8, 4), magnitudes=(1.0,))
    with pytest.raises(ValueError, match="combine"):
        B.mrbs_field((16, 16), combine="product")
    with pytest.raises(ValueError, match="image must be"):
        B.BigAug()(torch.zeros(16, 16))


def test_gaussian_blur_keeps_constants_and_smooths():
    x = torch.full((1, 2, 12, 10, 9), 0.7)
    torch.testing.assert_close(B.gaussian_blur(x, 1.2), x)
    noise = torch.randn(1, 1, 32, 32, generator=_gen(0))
    assert B.gaussian_blur(noise, 1.5).std() < 0.5 * noise.std()
    assert B.gaussian_blur(noise, 0) is noise
