"""drdm.sampling: Algorithm 2 arithmetic, Algorithms 3/4, and Table 1 with real weights."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from drdm import spatial
from drdm.network import DRDMNet, NetworkConfig
from drdm.sampling import augment, deform, registration_pairs, table1

OFFICIAL = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "official"
CKPT = OFFICIAL / "models" / "cmr_recresacnet" / "000000_cmr_recresacnet.pth"
ACDC = OFFICIAL / "Data" / "Tgt_data" / "cmr" / "Tr" / "patient001_frame01.nii.gz"


class ConstantNet(torch.nn.Module):
    """Stands in for D_theta: always predicts the same constant shift (voxels)."""

    def __init__(self, shift, ndim=2, timesteps=80):
        super().__init__()
        self.shift = shift
        self.config = NetworkConfig(ndim=ndim, timesteps=timesteps)
        self.calls = []

    def forward(self, image, t):
        self.calls.append(int(t[0]))
        out = torch.zeros(image.shape[0], self.config.ndim, *image.shape[2:], dtype=image.dtype)
        out[:, 0] = self.shift
        return out


def test_recovery_composes_every_step_into_one_field():
    net = ConstantNet(0.5)
    img = torch.rand(2, 1, 16, 16)
    r = deform(net, img, 6, random_ddf=torch.zeros(2, 2, 16, 16))
    assert net.calls == [5, 4, 3, 2, 1, 0]                 # Algorithm 2: T'..1, 0-based
    assert torch.allclose(r.ddf[:, 0], torch.full((2, 16, 16), 3.0))
    assert torch.allclose(r.image, spatial.warp(img, r.ddf))   # the original warped once
    net = ConstantNet(0.5)
    deform(net, img, 6, random_ddf=torch.zeros(2, 2, 16, 16), recover="all")
    assert net.calls == list(range(79, -1, -1))


def test_deform_is_seeded_and_batched():
    net = DRDMNet(NetworkConfig(ndim=2)).eval()
    img = torch.rand(1, 1, 32, 32).expand(3, 1, 32, 32)
    a = deform(net, img, 10, generator=torch.Generator().manual_seed(0))
    b = deform(net, img, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.ddf, b.ddf)
    assert not torch.equal(a.ddf[0], a.ddf[1])               # samples of one image differ
    with pytest.raises(ValueError, match=r"level T' must lie in \[0, 79\]"):
        deform(net, img, 80)


def test_augment_keeps_labels_and_registration_pairs_compose():
    from drdm.phantoms import cardiac_phantom
    net = DRDMNet(NetworkConfig(ndim=2)).eval()
    im, lab = cardiac_phantom(3, 32)
    img, lab = torch.from_numpy(im)[None, None], torch.from_numpy(lab)[None, None]
    outs = list(augment(net, img, lab, levels=[5, 8], n=3, generator=torch.Generator().manual_seed(1), batch=2))
    assert [(o["level"], o["index"]) for o in outs] == [(5, 0), (5, 1), (5, 2), (8, 0), (8, 1), (8, 2)]
    for o in outs:
        assert o["label"].dtype == lab.dtype
        assert set(o["label"].unique().tolist()) <= {0, 1, 2, 3}
        assert torch.equal(o["label"], spatial.warp(lab, o["ddf"], mode="label"))
    pairs = list(registration_pairs(net, img, [(5, 3)], generator=torch.Generator().manual_seed(2)))
    p = pairs[0]
    assert torch.allclose(p["fixed"], spatial.warp(img, spatial.compose(p["ddf"], p["ddf_aug"])))
    # fixed is moving warped by phi_syn, up to the blur of the second resampling
    assert (spatial.warp(p["moving"], p["ddf"]) - p["fixed"]).abs().mean() < 0.02


def test_shipped_phantom_model_recovers_random_fields():
    from drdm import load_pretrained
    from drdm.phantoms import cardiac_dataset
    net = load_pretrained("phantom2d")
    S = net.train_config["image_size"]
    images, _, _ = cardiac_dataset(4, S, seed=70_000)
    tab = table1(net, images, levels=(30, 55), seed=0, progress=False)
    for L, row in tab.items():
        assert row["recovered"]["mean_pct"]["mean"] < row["random"]["mean_pct"]["mean"], L
        assert row["recovered"]["negJ_pct"]["mean"] < row["random"]["negJ_pct"]["mean"], L


@pytest.mark.skipif(not (CKPT.exists() and ACDC.exists()),
                    reason="../shared/reference/official (weights and ACDC sample) not present")
def test_official_weights_table1_at_30():
    import nibabel as nib
    from drdm import load_official
    torch.set_num_threads(2)
    vol = torch.from_numpy(nib.load(str(ACDC)).get_fdata()).float()
    sl = vol[..., [4, 6]].permute(2, 0, 1)[:, None]
    sl = F.interpolate(sl, size=(256, 256), mode="bilinear", align_corners=False)
    lo, hi = sl.amin((2, 3), keepdim=True), sl.amax((2, 3), keepdim=True)
    tab = table1(load_official(CKPT), (sl - lo) / (hi - lo), levels=(30,), seed=0, progress=False,
                 padding="zeros")[30]
    assert 2.0 <= tab["recovered"]["mean_pct"]["mean"] <= 3.5, tab
    assert tab["recovered"]["negJ_pct"]["mean"] < 1.5, tab
    assert tab["recovered"]["negJ_pct"]["mean"] < 0.5 * tab["random"]["negJ_pct"]["mean"], tab
