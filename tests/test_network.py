"""drdm.network / drdm.checkpoint: the official weights reproduce the release's outputs."""
import pickle
import numpy as np
import pytest
import torch

from drdm import shared, spatial
from drdm.checkpoint import CheckpointError, load_official, load_state_dict
from drdm.network import DRDMNet, NetworkConfig, default_init_, sinusoidal_table

OFFICIAL = shared.official_dir()   # None without the shared data
CKPT = shared.official_checkpoint()
GOLDEN = OFFICIAL / "golden_network_io.npz" if OFFICIAL is not None else None
needs_official = pytest.mark.skipif(CKPT is None or GOLDEN is None or not GOLDEN.exists(),
                                    reason=shared.absent_reason("the release's checkpoint and golden outputs"))


@needs_official
def test_official_weights_load_exactly_and_reproduce_golden_outputs():
    net = load_official(CKPT)
    assert net.n_parameters == 443_435
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 435_435
    ref = np.load(GOLDEN)
    x = torch.from_numpy(ref["input"])
    with torch.no_grad():
        for t in (0, 10, 40, 79):
            for k in (1, 2):
                # the release's unit: fraction of the image side
                out = spatial.voxels_to_fraction(net(x, t, recursion=k)).numpy()
                assert np.abs(out - ref[f"ddf_t{t}_K{k}"]).max() < 1e-5, (t, k)


@needs_official
def test_official_time_table_is_the_release_quirk():
    sd = load_state_dict(CKPT)
    assert torch.allclose(sd["time_embed.weight"], sinusoidal_table(80, 100, official=True), atol=1e-5)


@pytest.mark.parametrize("cfg", [NetworkConfig(ndim=2), NetworkConfig(ndim=3, variant="paper"),
                                 NetworkConfig(ndim=2, in_channels=2, recursion=3)])
def test_shapes_2d_3d_and_variants(cfg):
    net = DRDMNet(cfg)
    S = (16,) * cfg.ndim
    out = net(torch.rand(2, cfg.in_channels, *S), torch.tensor([0, 5]))
    assert out.shape == (2, cfg.ndim, *S)
    assert net.time_embed.weight.requires_grad is False
    if cfg.variant == "paper":
        assert net.b4[0].ln is not None and net.config.time_dim == 80


def test_recursion_composes_passes():
    torch.manual_seed(0)
    net = DRDMNet(NetworkConfig(ndim=2)).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        u1 = net(x, 7, recursion=1)
        u2 = spatial.fraction_to_voxels(net.unet(spatial.warp(x, u1), torch.tensor([7])))
        both = net(x, 7, recursion=2)
    assert torch.allclose(both, spatial.compose(u2, u1), atol=1e-6)


@pytest.mark.parametrize("args, match", [
    ((torch.rand(1, 1, 30, 32), 3), "divisible by 8"),
    ((torch.rand(1, 1, 32, 32, 32), 3), r"image must have shape \(B, 1, H, W\)"),
    ((torch.rand(1, 1, 32, 32), 80), r"t must lie in \[0, 79\]"),
    ((torch.rand(2, 1, 32, 32), torch.tensor([1.0, 2.0])), "integer"),
    ((torch.ones(1, 1, 32, 32, dtype=torch.int32), 1), "floating point"),
])
def test_bad_network_input(args, match):
    with pytest.raises(ValueError, match=match):
        DRDMNet(NetworkConfig(ndim=2))(*args)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    p = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "x": _Evil()}, p)
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(p)
    assert "must never run" not in capsys.readouterr().out


def test_truncated_and_foreign_checkpoints_give_clear_errors(tmp_path):
    good = tmp_path / "good.pth"
    net = DRDMNet(NetworkConfig(ndim=3))
    torch.save(net.state_dict(), good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_state_dict(bad)
    with pytest.raises(CheckpointError, match="3-D checkpoint"):
        load_official(good, ndim=2)
    assert load_official(good).config.ndim == 3
    with pytest.raises(CheckpointError, match="no such"):
        load_state_dict(tmp_path / "missing.pth")
    (tmp_path / "p.pth").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path / "p.pth")


# ---------------------------------------------------------------- seeded initialisation

def assert_seeded_init_matches_global_seeding(build, seed=3):
    """``build(generator)`` equals ``torch.manual_seed(seed); build(None)`` bit for bit and
    leaves the global RNG where it was (the package itself never seeds it)."""
    torch.manual_seed(seed)
    old = build(None).state_dict()
    torch.manual_seed(999)
    before = torch.get_rng_state()
    new = build(torch.Generator().manual_seed(seed)).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert old.keys() == new.keys()
    assert [k for k in old if not torch.equal(old[k], new[k])] == []


@pytest.mark.parametrize("ndim,variant", [(2, "official"), (2, "paper"), (3, "official")])
def test_drdmnet_from_a_generator_equals_global_seeding(ndim, variant):
    cfg = NetworkConfig(ndim=ndim, variant=variant)
    assert_seeded_init_matches_global_seeding(lambda g: DRDMNet(cfg, generator=g))
    net = DRDMNet(cfg, generator=torch.Generator().manual_seed(0))
    assert torch.equal(net.time_embed.weight, sinusoidal_table(80, cfg.time_dim, variant == "official"))
    assert not net.time_embed.weight.requires_grad


def test_default_init_refuses_unknown_layers():
    with pytest.raises(TypeError, match="PReLU"):
        default_init_(torch.nn.Sequential(torch.nn.PReLU()), torch.Generator())
