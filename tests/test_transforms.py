"""drdm.transforms.RandDRDMd: one DRDM deformation per call, label-safe, seeded, MONAI-compatible."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from drdm import spatial
from drdm.network import DRDMNet, NetworkConfig
from drdm.phantoms import cardiac_phantom, thorax_phantom
from drdm.training import TrainConfig, save_checkpoint
from drdm.transforms import RandDRDMd

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def small_net(ndim=2):
    """Untrained, with a shrunk last layer so recovery steps stay small."""
    torch.manual_seed(0)
    net = DRDMNet(NetworkConfig(ndim=ndim))
    with torch.no_grad():
        net.conv_out.weight.mul_(0.01)
        net.conv_out.bias.mul_(0.01)
    return net.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("tf") / "ck.pth"
    save_checkpoint(path, small_net(), TrainConfig(image_size=32))
    return path


@pytest.fixture(scope="module")
def sample():
    img, lab = cardiac_phantom(5, 32)
    return {"image": img[None], "label": lab[None]}          # (1, 32, 32) float32, int64


def test_plain_use_numpy_and_torch(ckpt, sample):
    t = RandDRDMd(checkpoint=ckpt, levels=(12,), seed=0)
    assert t._net is None                                    # loaded lazily
    out = t(sample)
    net = t._net
    assert isinstance(out["image"], np.ndarray) and out["image"].shape == (1, 32, 32)
    assert out["image"].dtype == np.float32 and out["label"].dtype == np.int64
    assert np.abs(out["image"] - sample["image"]).mean() > 1e-3
    assert t.last_ddf.shape == (2, 32, 32)
    # the image is the input warped once by last_ddf; the label with the label-safe warp
    ref = spatial.warp(torch.from_numpy(sample["image"])[None], t.last_ddf[None], padding_mode="border")[0]
    np.testing.assert_allclose(out["image"], ref.numpy(), atol=1e-6)
    lab = spatial.warp(torch.from_numpy(sample["label"])[None], t.last_ddf[None], mode="label")[0]
    np.testing.assert_array_equal(out["label"], lab.numpy())
    # torch in, torch out; the network is loaded once
    out_t = t({k: torch.from_numpy(v) for k, v in sample.items()})
    assert isinstance(out_t["image"], torch.Tensor) and out_t["label"].dtype == torch.int64
    assert t._net is net


def test_prob_zero_is_identity(ckpt, sample):
    t = RandDRDMd(checkpoint=ckpt, levels=(12,), prob=0.0, seed=0)
    out = t(sample)
    assert out["image"] is sample["image"] and out["label"] is sample["label"]
    assert t.last_ddf is None and t._net is None             # never even loaded


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.float32])
def test_labels_keep_their_values_and_dtype(sample, dtype):
    t = RandDRDMd(checkpoint=small_net(), levels=(30,), spatial_size=None, seed=3)
    lab = sample["label"].astype(dtype)
    out = t({"image": sample["image"], "label": lab})
    assert out["label"].dtype == dtype
    assert set(np.unique(out["label"])) <= set(np.unique(lab))
    assert len(np.unique(out["label"])) == len(np.unique(lab))      # no structure lost at this level
    assert (out["label"] != lab).any()


def test_same_seed_same_output_and_different_seeds_differ(sample):
    net = small_net()
    a = RandDRDMd(checkpoint=net, levels=(5, 20), spatial_size=None).set_random_state(7)
    b = RandDRDMd(checkpoint=net, levels=(5, 20), spatial_size=None).set_random_state(7)
    c = RandDRDMd(checkpoint=net, levels=(5, 20), spatial_size=None, seed=8)
    for _ in range(2):
        oa, ob, oc = a(sample), b(sample), c(sample)
        np.testing.assert_array_equal(oa["image"], ob["image"])
        np.testing.assert_array_equal(oa["label"], ob["label"])
        assert not np.array_equal(oa["image"], oc["image"])


def test_every_key_gets_the_same_field(sample):
    t = RandDRDMd(keys=("image", "copy", "label"), checkpoint=small_net(), levels=(10,), spatial_size=None, seed=0)
    out = t({**sample, "copy": sample["image"].copy(), "other": "untouched"})
    np.testing.assert_array_equal(out["image"], out["copy"])
    assert out["other"] == "untouched"


def test_runs_on_the_network_grid_and_returns_the_field_on_the_data_grid(ckpt):
    img, lab = cardiac_phantom(2, 48)
    img, lab = img[:, 4:44], lab[:, 4:44]                     # 48 x 40: not the network's 32 x 32
    t = RandDRDMd(checkpoint=ckpt, levels=(10,), seed=1)      # spatial_size="network"
    out = t({"image": img[None], "label": lab[None]})
    assert out["image"].shape == (1, 48, 40) and t.last_ddf.shape == (2, 48, 40)
    assert set(np.unique(out["label"])) <= set(np.unique(lab))
    with pytest.raises(ValueError, match="multiple of 8"):
        RandDRDMd(keys="image", checkpoint=ckpt, levels=(10,), spatial_size=None, seed=1)({"image": img[None, :, :36]})


def test_3d_volume():
    vol, lungs = thorax_phantom(0, 24)
    t = RandDRDMd(checkpoint=small_net(3), levels=(4,), spatial_size=16, seed=0)
    out = t({"image": torch.from_numpy(vol)[None], "label": torch.from_numpy(lungs)[None]})
    assert out["image"].shape == (1, 24, 24, 24) and t.last_ddf.shape == (3, 24, 24, 24)
    assert set(out["label"].unique().tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("data, error, phrase", [
    ({"image": np.zeros((32, 32), np.float32)}, ValueError, "channel-first"),
    ({"image": np.zeros((1, 1, 32, 32), np.float32)}, ValueError, "channel-first"),
    ({"image": np.zeros((1, 32, 32), np.float32), "label": np.zeros((1, 32, 24), np.int64)}, ValueError,
     "share one grid"),
    ({"image": np.full((1, 32, 32), np.nan, np.float32)}, ValueError, "NaN or Inf"),
    ({"image": np.zeros((1, 32, 32), np.float32), "label": np.full((1, 32, 32), 0.5, np.float32)}, ValueError,
     "non-integer"),
    ({"label": np.zeros((1, 32, 32), np.int64)}, KeyError, "none of the image keys"),
    ({"image": [[0.0]]}, TypeError, "numpy array or torch tensor"),
])
def test_bad_data_is_refused_with_a_clear_message(data, error, phrase):
    t = RandDRDMd(checkpoint=small_net(), levels=(3,), spatial_size=None, seed=0, allow_missing_keys=True)
    with pytest.raises(error, match=phrase):
        t(data)


def test_bad_arguments_are_refused(ckpt, tmp_path):
    with pytest.raises(ValueError, match="all label keys"):
        RandDRDMd(keys=("label",), checkpoint=ckpt)
    with pytest.raises(ValueError, match="non-negative integers"):
        RandDRDMd(checkpoint=ckpt, levels=(-1,))
    with pytest.raises(ValueError, match="prob"):
        RandDRDMd(checkpoint=ckpt, prob=1.5)
    with pytest.raises(ValueError, match="checkpoint is required"):
        RandDRDMd()
    with pytest.raises(ValueError, match=r"out of range.*T=80"):
        RandDRDMd(checkpoint=small_net(), levels=(80,))
    with pytest.raises(KeyError, match="allow_missing_keys"):
        RandDRDMd(checkpoint=ckpt, seed=0)({"image": np.zeros((1, 32, 32), np.float32)})
    t = RandDRDMd(keys="image", checkpoint=ckpt, levels=(95,), seed=0)     # checked when the network loads
    with pytest.raises(ValueError, match="out of range"):
        t({"image": np.zeros((1, 32, 32), np.float32)})
    from drdm.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        RandDRDMd(keys="image", checkpoint=tmp_path / "missing.pth", seed=0)({"image": np.zeros((1, 32, 32), np.float32)})


def test_works_without_monai(ckpt):
    code = (
        "import sys; sys.modules['monai'] = None\n"           # any `import monai...` now fails
        "import numpy as np\n"
        "from drdm.transforms import RandDRDMd\n"
        "from drdm.phantoms import cardiac_phantom\n"
        "assert RandDRDMd.__mro__[1] is object\n"
        "img, lab = cardiac_phantom(0, 32)\n"
        f"t = RandDRDMd(checkpoint={str(ckpt)!r}, levels=(5,)).set_random_state(0)\n"
        "out = t({'image': img[None], 'label': lab[None]})\n"
        "assert set(np.unique(out['label'])) <= set(np.unique(lab)) and out['image'].shape == (1, 32, 32)\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_inside_monai_compose_with_randflipd(ckpt, sample):
    monai = pytest.importorskip("monai")
    from monai.transforms import Compose, EnsureTyped, RandFlipd, Randomizable
    from monai.data import MetaTensor

    def pipeline():
        return Compose([
            EnsureTyped(keys=("image", "label")),
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),
            RandDRDMd(checkpoint=ckpt, levels=(5, 15), prob=0.9),
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1),
        ])

    data = {"image": sample["image"], "label": sample["label"].astype(np.float32)}   # MONAI-style float labels
    assert isinstance(pipeline().transforms[2], Randomizable)
    a = pipeline().set_random_state(seed=11)
    b = pipeline().set_random_state(seed=11)
    for _ in range(3):
        oa, ob = a(dict(data)), b(dict(data))
        assert isinstance(oa["image"], MetaTensor) and "affine" in oa["image"].meta
        assert oa["image"].shape == (1, 32, 32) and oa["label"].dtype == torch.float32
        assert set(oa["label"].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
        assert torch.equal(oa["image"].as_tensor(), ob["image"].as_tensor())     # Compose seeds RandDRDMd too
    # different Compose seeds give different deformations
    oc = pipeline().set_random_state(seed=12)(dict(data))
    assert not torch.equal(oa["image"].as_tensor(), oc["image"].as_tensor())
