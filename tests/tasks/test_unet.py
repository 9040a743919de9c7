"""drdm.tasks.unet: the segmentation U-Net's shapes, its loss, and seeding from a generator."""
import pytest
import torch

from drdm.tasks import unet as U


pytestmark = pytest.mark.usefixtures("one_thread")


def test_unet_shapes_and_bce():
    for ndim, shape in ((2, (21, 18)), (3, (9, 12, 10))):
        net = U.UNet(ndim, 1, 4, (4, 8, 8))
        out = net(torch.rand(2, 1, *shape))
        assert out.shape == (2, 4, *shape)
    logits = torch.randn(2, 4, 5, 6)
    label = torch.randint(0, 4, (2, 1, 5, 6))
    onehot = torch.nn.functional.one_hot(label[:, 0], 4).movedim(-1, 1).float()
    p = torch.sigmoid(logits)
    manual = -(onehot * p.log() + (1 - onehot) * (1 - p).log()).sum(1).mean()
    torch.testing.assert_close(U.bce_loss(logits, label, 4), manual)


@pytest.mark.parametrize("ndim,norm", [(2, None), (2, "batch"), (3, "instance")])
def test_unet_from_a_generator_equals_global_seeding(ndim, norm):
    from test_network import assert_seeded_init_matches_global_seeding
    assert_seeded_init_matches_global_seeding(lambda g: U.UNet(ndim, 1, 4, (4, 8, 8), norm, generator=g))
