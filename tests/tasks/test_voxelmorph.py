"""drdm.tasks.voxelmorph: the registration network's shapes, identity start, smoothness terms, and
seeding from a generator (plus registration.register with no model: the identity field)."""
import pytest
import torch

from drdm import spatial
from drdm.tasks import registration as R, voxelmorph as V


pytestmark = pytest.mark.usefixtures("one_thread")


def test_voxelmorph_shapes_init_and_losses():
    for ndim, shape in ((2, (20, 27)), (3, (12, 10, 9))):
        net = V.VoxelMorph(ndim, 1, (8, 8, 8), (8, 8, 8), (8,))
        u = net(torch.rand(2, 1, *shape), torch.rand(2, 1, *shape))
        assert u.shape == (2, ndim, *shape)
        assert u.abs().max() < 1e-2                                           # starts near the identity
    x = spatial.identity_grid((6, 7), dtype=torch.float32)[None]
    assert V.gradient_l1(0.5 * x).item() == pytest.approx(0.5)                # 0.25 per axis, summed
    assert V.gradient_l2(0.5 * x).item() == pytest.approx(0.125)
    assert R.register(None, torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)).abs().sum() == 0


@pytest.mark.parametrize("ndim,extra", [(2, (8,)), (3, ()), (2, (16, 16))])
def test_voxelmorph_from_a_generator_equals_global_seeding(ndim, extra):
    from test_network import assert_seeded_init_matches_global_seeding
    assert_seeded_init_matches_global_seeding(lambda g: V.VoxelMorph(ndim, 1, (8, 8), (8, 8), extra, generator=g))
