"""Algorithm 2 as the release runs it: one exact step, the default settings, batch-free Table 1,
and the in-distribution comparison's arithmetic."""
import json

import numpy as np
import pytest
import torch

from drdm import spatial
from drdm.network import DRDMNet, NetworkConfig
from drdm.evaluation import table1
from drdm.sampling import deform, predictor, recovery_settings, recovery_step
from drdm.shared import absent_reason, official_checkpoint, official_dir

OFFICIAL = official_dir()
GOLDEN = None if OFFICIAL is None else OFFICIAL / "golden_recovery_step.npz"
needs_golden = pytest.mark.skipif(GOLDEN is None or not GOLDEN.exists() or official_checkpoint() is None,
                                  reason=absent_reason("golden_recovery_step.npz and the release's weights"))
S = 256          # the release's fields are fractions of the 256-voxel side


@pytest.fixture(scope="module")
def release():
    from drdm import load_official
    return load_official(official_checkpoint()), np.load(GOLDEN)


@needs_golden
@pytest.mark.parametrize("level", [30, 45])
@pytest.mark.parametrize("path", ["plain", "channels_last", "fast"])
def test_one_release_step_is_reproduced(release, level, path):
    """From the release's saved states, drdm's step (warp, network, compose, warp) lands on its outputs."""
    net, g = release
    rs = recovery_settings(net)
    assert rs.name == "release" and (rs.image_mode, rs.padding) == ("bicubic", "zeros")
    image = torch.from_numpy(g["input"])
    phi = torch.from_numpy(g[f"T{level}_ddf"]) * S
    t = int(g[f"T{level}_t"][0])
    assert t == level - 1                                               # time indices T'-1 ... 0
    warped = spatial.warp(image, phi, mode=rs.image_mode)
    assert (warped - torch.from_numpy(g[f"T{level}_warped"])).abs().max() <= 1e-3
    predict, taken = predictor(net, image, path)
    assert taken == path
    with torch.no_grad():
        psi, nxt, cur = recovery_step(predict, image, phi, torch.from_numpy(g[f"T{level}_warped"]), t, rs)
    assert (psi - torch.from_numpy(g[f"T{level}_psi"]) * S).abs().max() <= 5e-3
    assert (nxt - torch.from_numpy(g[f"T{level}_ddf_next"]) * S).abs().max() <= 5e-3
    assert (cur - torch.from_numpy(g[f"T{level}_warped_next"])).abs().max() <= 1e-3


@needs_golden
def test_drdm_settings_depart_from_the_release_step(release):
    """The control: linear warps and border padding miss the release's step by voxels at the border."""
    net, g = release
    image, phi = torch.from_numpy(g["input"]), torch.from_numpy(g["T30_ddf"]) * S
    with torch.no_grad():
        _, nxt, cur = recovery_step(net, image, phi, torch.from_numpy(g["T30_warped"]), 29,
                                    recovery_settings(net, "drdm"))
    assert (nxt - torch.from_numpy(g["T30_ddf_next"]) * S).abs().max() > 1.0
    assert (cur - torch.from_numpy(g["T30_warped_next"])).abs().max() > 0.05


def test_settings_default_by_weights_and_are_recorded():
    ours = DRDMNet(NetworkConfig(ndim=2)).eval()
    assert recovery_settings(ours).name == "drdm"
    release_like = DRDMNet(NetworkConfig(ndim=2)).eval()
    release_like.weights_origin = "release"
    assert recovery_settings(release_like).name == "release"
    net3 = DRDMNet(NetworkConfig(ndim=3, channels=(4, 4, 4))).eval()
    net3.weights_origin = "release"
    assert recovery_settings(net3).image_mode == "linear"               # no bicubic in 3-D (config_lct)
    img = torch.rand(1, 1, 16, 16)
    a = deform(ours, img, 3, generator=torch.Generator().manual_seed(0))
    b = deform(ours, img, 3, generator=torch.Generator().manual_seed(0), settings="release")
    assert (a.settings, b.settings) == ("drdm", "release")
    assert not torch.equal(a.image, b.image)
    assert torch.allclose(b.image, spatial.warp(img, b.ddf, mode="bicubic"))
    with pytest.raises(ValueError, match="settings must be one of"):
        deform(ours, img, 3, settings="official")


@pytest.mark.parametrize("path", ["channels_last", "fast"])
def test_the_fast_paths_leave_the_callers_network_alone(path):
    net = DRDMNet(NetworkConfig(ndim=2)).eval()
    before = {k: (v.stride(), v.clone()) for k, v in net.state_dict().items()}
    res = deform(net, torch.rand(1, 1, 128, 128), 1, generator=torch.Generator().manual_seed(0), path=path)
    assert res.path == path
    after = net.state_dict()
    assert all(after[k].stride() == s and torch.equal(after[k], v) for k, (s, v) in before.items())
    assert "unet" not in vars(net)                                      # the compiled pass lives on a copy


def test_the_fast_path_is_the_cpu_default_and_its_samples_ignore_batch_and_threads():
    """Each sample runs alone, on one thread in a worker or on two in the caller, with the fused
    kernels single-threaded: the same bits whatever the batch and the thread count."""
    from drdm.sampling import default_path
    net = DRDMNet(NetworkConfig(ndim=2), generator=torch.Generator().manual_seed(1)).eval()
    images = torch.rand(3, 1, 128, 128, generator=torch.Generator().manual_seed(2))
    assert default_path(images) == "fast" and default_path(images[..., :64, :64]) == "plain"
    torch.set_num_threads(2)            # (the root conftest restores the session's count after the test)
    batch = deform(net, images, 4, generator=torch.Generator().manual_seed(3))
    phi = batch.random
    torch.set_num_threads(1)
    alone = [deform(net, images[i:i + 1], 4, random_ddf=phi[i:i + 1]) for i in range(3)]
    assert batch.path == "fast" and all(a.path == "fast" for a in alone)
    assert all(torch.equal(a.ddf, batch.ddf[i:i + 1]) and torch.equal(a.image, batch.image[i:i + 1])
               for i, a in enumerate(alone))
    # and it is a recovery of the same random field as the plain path's, to float rounding on one step
    one = deform(net, images[:1], 1, random_ddf=phi[:1, :, :, :], path="fast")
    ref = deform(net, images[:1], 1, random_ddf=phi[:1, :, :, :], path="plain")
    assert (one.ddf - ref.ddf).abs().max() < 5e-3                        # voxels (fields of ~20 voxels)


def test_one_copy_per_level_runs_the_levels_side_by_side_with_the_same_bits(monkeypatch):
    """Algorithm 3 at the release's schedule makes one copy per level: on the fast path two levels
    run at once, one per thread, and give the copies a one-thread run makes one after another; a
    lone copy, which runs on both threads, gives them too (the runner's claim, ``drdm.runner``)."""
    from drdm import sampling
    from drdm.grid import InputGrid
    net = DRDMNet(NetworkConfig(ndim=2), generator=torch.Generator().manual_seed(1)).eval()
    net.train_config = {"image_size": 128}
    image = torch.rand(1, 1, 96, 96, generator=torch.Generator().manual_seed(2))
    label = (image > 0.5).long()
    grid = InputGrid.of(net, (96, 96))
    calls = []
    real = sampling.per_sample

    def counting(fn, n, spread):
        calls.append((n, spread))
        return real(fn, n, spread)

    monkeypatch.setattr(sampling, "per_sample", counting)
    out = {}
    for k in (1, 2):                    # (the root conftest restores the session's count after the test)
        torch.set_num_threads(k)
        out[k] = list(sampling.augment(net, image, label, (2, 3, 4), 1, grid=grid, seed=5))
    alone = list(sampling.augment(net, image, label, (3,), 1, grid=grid, seed=5))    # 2 threads, inline
    assert [(c["level"], c["index"]) for c in out[2]] == [(2, 0), (3, 0), (4, 0)]
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
               and torch.equal(a["ddf"], b["ddf"]) for a, b in zip(out[1], out[2]))
    assert (2, True) in calls                      # at two threads, levels 2 and 3 ran side by side
    assert calls[-1] == (1, True) and all(torch.equal(alone[0][k], out[1][1][k]) for k in ("image", "label", "ddf"))


def test_table1_does_not_depend_on_batch():
    """Each image draws its field from its own stream: batch 1 and batch 8 give the same numbers."""
    net = DRDMNet(NetworkConfig(ndim=2)).eval()
    images = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    one = table1(net, images, levels=(4, 9), seed=7, batch=1, progress=False)
    eight = table1(net, images, levels=(4, 9), seed=7, batch=8, progress=False)
    assert json.dumps(one, sort_keys=True) == json.dumps(eight, sort_keys=True)
    # and the first images' numbers do not depend on which images follow them
    _, rows3 = table1(net, images[:3], levels=(4,), seed=7, batch=8, progress=False, return_rows=True)
    _, rows5 = table1(net, images, levels=(4,), seed=7, batch=2, progress=False, return_rows=True)
    assert rows3[4]["recovered"]["mean_pct"] == rows5[4]["recovered"]["mean_pct"][:3]


def test_cli_table1_json_does_not_depend_on_batch(tmp_path, one_thread):
    from drdm.cli import main
    outs = []
    for batch in (1, 8):
        out = tmp_path / f"t{batch}.json"
        assert main(["table1", "--checkpoint", "phantom2d", "--phantoms", "3", "--levels", "5,20",
                     "--batch", str(batch), "--out", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert doc["settings"] == "drdm"
        outs.append(doc["results"])
    assert outs[0] == outs[1]


def test_compare_applies_the_criterion():
    from drdm.fidelity import METRICS, compare
    rng = np.random.default_rng(0)
    ref = [{"T_prime": 30, "index": i, **{m: float(v) for m, v in zip(METRICS, rng.normal(10, 1, 6))}}
           for i in range(40)]
    same = [dict(r) for r in ref]
    assert all(r["agrees"] for r in compare(same, ref, levels=(30,)))
    shifted = [{**r, "rec_mean": r["rec_mean"] * 1.5} for r in ref]      # +50 %: far outside 10 % and 2.5 SE
    rows = {r["metric"]: r for r in compare(shifted, ref, levels=(30,))}
    assert not rows["rec_mean"]["agrees"] and rows["rec_max"]["agrees"]
    small = [{**r, "rec_negJ": r["rec_negJ"] + 0.25} for r in ref]     # within 0.3 points
    assert {r["metric"]: r for r in compare(small, ref, levels=(30,))}["rec_negJ"]["agrees"]


@pytest.mark.skipif(official_checkpoint() is None or OFFICIAL is None
                    or not (OFFICIAL / "recovery_stats.json").exists(),
                    reason=absent_reason("the release's recovery statistics"))
def test_release_setting_agrees_on_a_few_real_slices(tmp_path):
    """A small version of `make fidelity` (6 slices at T'=30): the committed full run is in
    results/fidelity/. With 6 slices the allowance is wide, so this guards against gross departures."""
    from drdm import load_official
    from drdm.fidelity import compare, release_reference, run
    inputs, names, stats = release_reference(OFFICIAL)
    ours = run(load_official(official_checkpoint()), inputs, names, tmp_path / "p.jsonl", levels=(30,), limit=6,
               progress=False)
    assert all(r["settings"] == "release" for r in ours)
    rows = compare(ours, stats["per_slice"], levels=(30,))
    assert all(r["n_drdm"] == r["n_release"] == 6 for r in rows)
    assert all(r["agrees"] for r in rows), rows
    again = run(None, inputs, names, tmp_path / "p.jsonl", levels=(30,), limit=6, progress=False)  # resumes: no work
    assert again == ours
