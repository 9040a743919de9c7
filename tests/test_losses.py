"""drdm.losses: Eq. 14 terms vanish at an exact inverse; the corrected regulariser sees folds."""
import pytest
import torch

from drdm import losses


def _const(v, shape=(1, 2, 16, 16)):
    u = torch.zeros(shape, dtype=torch.float64)
    for i, x in enumerate(v):
        u[:, i] = x
    return u


def test_exact_inverse_gives_zero_distance_and_angle():
    psi = _const([1.5, -0.5])
    pred = -psi                                   # the inverse of a translation
    out = losses.drdm_loss(pred, psi)
    assert out["dist"].item() == pytest.approx(0, abs=1e-12)
    assert out["angle"].item() == pytest.approx(0, abs=1e-12)
    assert out["reg"].item() == 0
    # a wrong prediction costs something in both terms
    bad = losses.drdm_loss(psi.clone(), psi)
    assert bad["dist"] > 1 and bad["angle"] == pytest.approx(2)


def test_corrected_regulariser_sees_folds_and_official_does_not():
    # an affine fold: u = -2 x along axis 0, det(I + grad u) = -1 everywhere
    x = torch.arange(16, dtype=torch.float64)
    fold = torch.zeros(1, 2, 16, 16, dtype=torch.float64)
    fold[:, 0] = -2 * x.view(16, 1)
    assert losses.negative_jacobian_penalty(fold).item() == pytest.approx(1.0)
    assert losses.official_pseudo_det_penalty(fold).item() == 0.0
    # a smooth invertible field: zero penalty
    smooth = torch.zeros(1, 2, 16, 16, dtype=torch.float64)
    smooth[:, 1] = 0.5 * torch.sin(x / 5).view(1, 16)
    assert losses.negative_jacobian_penalty(smooth).item() == 0.0
    c = losses.drdm_loss(fold, _const([1.0, 0.0]), coding="corrected")["reg"]
    o = losses.drdm_loss(fold, _const([1.0, 0.0]), coding="official")["reg"]
    assert c > o


def test_loss_is_differentiable_and_checks_input():
    pred = (torch.randn(2, 2, 16, 16, dtype=torch.float64) * 0.5).requires_grad_()
    psi = torch.randn(2, 2, 16, 16, dtype=torch.float64) * 0.5
    losses.drdm_loss(pred, psi)["loss"].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="psi must have spatial shape"):
        losses.drdm_loss(pred, psi[..., :8])
    with pytest.raises(ValueError, match="coding"):
        losses.drdm_loss(pred, psi, coding="paper")
