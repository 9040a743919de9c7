"""drdm augment | synth | table1: outputs overlay the input, labels stay labels, runs resume after a kill."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from drdm import shared, spatial
from drdm.cli import main
from drdm.network import DRDMNet, NetworkConfig
from drdm.phantoms import cardiac_phantom, thorax_phantom
from drdm import load as load_network
from drdm.grid import InputGrid
from drdm.sampling import network_grid as network_size
from drdm.training import TrainConfig, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_CKPT = shared.official_checkpoint()   # None without the shared data
# anisotropic spacing (1.5, 1.0, 1) mm with a translation
AFFINE2 = np.array([[1.5, 0, 0, 10.0], [0, 1.0, 0, -5.0], [0, 0, 1.0, 3.0], [0, 0, 0, 1]])
AFFINE3 = np.array([[1.2, 0, 0, -7.0], [0, 1.0, 0, 4.0], [0, 0, 2.0, 12.5], [0, 0, 0, 1]])


pytestmark = pytest.mark.usefixtures("one_thread")


def make_checkpoint(path, ndim, size):
    """An untrained network whose last layer is shrunk, so recovery steps stay small and
    deformed labels keep their structures (an untrained net otherwise pushes everything out)."""
    torch.manual_seed(0)
    net = DRDMNet(NetworkConfig(ndim=ndim))
    with torch.no_grad():
        net.conv_out.weight.mul_(0.01)
        net.conv_out.bias.mul_(0.01)
    save_checkpoint(path, net, TrainConfig(ndim=ndim, image_size=size))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    img, lab = cardiac_phantom(3, 40)
    img, lab = img[:, 5:35], lab[:, 5:35]                        # 40 x 30, anisotropic grid
    files = {"ck2": make_checkpoint(root / "ck2.pth", 2, 32), "ck3": make_checkpoint(root / "ck3.pth", 3, 16)}
    for name, shape in (("slice", (40, 30, 1)), ("plain", (40, 30))):
        a = AFFINE2
        nib.save(nib.Nifti1Image(img.reshape(shape).astype(np.float32), a), root / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(lab.reshape(shape).astype(np.int16), a), root / f"{name}_lbl.nii.gz")
        files[name] = root / f"{name}.nii.gz"
        files[name + "_lbl"] = root / f"{name}_lbl.nii.gz"
    vol, lungs = thorax_phantom(1, 24)
    vol, lungs = vol[3:21, 5:19, 7:17], lungs[3:21, 5:19, 7:17]  # 18 x 14 x 10
    nib.save(nib.Nifti1Image(vol.astype(np.float32), AFFINE3), root / "vol.nii.gz")
    nib.save(nib.Nifti1Image(lungs.astype(np.uint8), AFFINE3), root / "vol_lbl.nii.gz")
    files["vol"], files["vol_lbl"] = root / "vol.nii.gz", root / "vol_lbl.nii.gz"
    files["root"] = root
    return files


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img


def check_sample(out, entry, src_path, lbl_path, ndim):
    """Files of one augment/synth sample: grid, affine, integer labels, ddf convention."""
    src, src_img = read(src_path)
    lab_in, _ = read(lbl_path)
    for role, name in entry["files"].items():
        arr, img = read(out / name)
        assert sha256(out / name) == entry["sha256"][role]
        np.testing.assert_array_equal(img.affine, src_img.affine)
        if role == "ddf":
            assert arr.shape == src.shape + (ndim,) and arr.dtype == np.float32
            assert img.header.get_intent()[0] == "vector"
        else:
            assert arr.shape == src.shape
        if "label" in role:
            assert arr.dtype.kind in "iu"
            assert set(np.unique(arr)) <= set(np.unique(lab_in))
            assert len(np.unique(arr)) >= 2                          # structures survive


def run_cli(args, capsys=None):
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    return rc


def warp_input_by(src_path, ddf_path, ndim):
    """Warp the input file by a written DDF (input voxels, component i along axis i)."""
    src, _ = read(src_path)
    u, _ = read(ddf_path)
    spatial_shape = src.shape[:ndim]
    x = torch.from_numpy(src.reshape(spatial_shape).astype(np.float32))[None, None]
    u = torch.from_numpy(np.moveaxis(u.reshape(*spatial_shape, ndim), -1, 0).copy())[None]
    return spatial.warp(x, u, padding_mode="border")[0, 0].numpy().reshape(src.shape)


# ---------------------------------------------------------------- augment


@pytest.mark.parametrize("name", ["slice", "plain"])
def test_augment_2d_outputs_overlay_the_input(work, tmp_path, name):
    out = tmp_path / "aug"
    rc = run_cli(["augment", "--checkpoint", work["ck2"], "--image", work[name], "--label", work[name + "_lbl"],
                  "--levels", "3,12", "--n", "2", "--batch", "3", "--out", out, "--device", "cpu"])
    assert rc == 0
    names = {f"{k}_L{lv}_{i:03d}.nii.gz" for k in ("img", "lbl", "ddf") for lv in (3, 12) for i in range(2)}
    assert {p.name for p in out.iterdir()} == names | {"manifest.json"}
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and m["checkpoint_sha256"] == sha256(work["ck2"]) and m["seed"] == 0
    assert m["levels"] == [3, 12] and m["geometry"]["network_grid"] == [32, 32]
    assert [(e["level"], e["index"], e["t_prime"]) for e in m["outputs"]] == [(3, 0, 3), (3, 1, 3), (12, 0, 12), (12, 1, 12)]
    for e in m["outputs"]:
        check_sample(out, e, work[name], work[name + "_lbl"], 2)
        assert set(e["metrics"]) == {"max_pct", "mean_pct", "negJ_pct"}
        assert 0 < e["metrics"]["mean_pct"] <= e["metrics"]["max_pct"] < 50 and 0 <= e["metrics"]["negJ_pct"] <= 100
        # the image is the ORIGINAL warped once by the written DDF
        img, _ = read(out / e["files"]["image"])
        np.testing.assert_allclose(img, warp_input_by(work[name], out / e["files"]["ddf"], 2), atol=1e-5)
    # deeper levels deform more; samples differ
    mean = {lv: np.mean([e["metrics"]["mean_pct"] for e in m["outputs"] if e["level"] == lv]) for lv in (3, 12)}
    assert mean[12] > mean[3]
    a, _ = read(out / "ddf_L12_000.nii.gz")
    b, _ = read(out / "ddf_L12_001.nii.gz")
    assert not np.allclose(a, b)


def test_augment_is_reproducible_and_independent_of_batch(work, tmp_path):
    args = ["augment", "--checkpoint", work["ck2"], "--image", work["plain"], "--levels", "5", "--n", "3",
            "--device", "cpu", "--seed", "7"]
    assert run_cli(args + ["--out", tmp_path / "a", "--batch", "1"]) == 0
    assert run_cli(args + ["--out", tmp_path / "b", "--batch", "3"]) == 0
    for i in range(3):
        a, _ = read(tmp_path / "a" / f"ddf_L5_{i:03d}.nii.gz")
        b, _ = read(tmp_path / "b" / f"ddf_L5_{i:03d}.nii.gz")
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_augment_3d_volume(work, tmp_path):
    out = tmp_path / "aug3"
    rc = run_cli(["augment", "--checkpoint", work["ck3"], "--image", work["vol"], "--label", work["vol_lbl"],
                  "--levels", "4", "--n", "2", "--out", out, "--device", "cpu"])
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["geometry"]["network_grid"] == [16, 16, 16] and len(m["outputs"]) == 2
    for e in m["outputs"]:
        check_sample(out, e, work["vol"], work["vol_lbl"], 3)
        ddf, _ = read(out / e["files"]["ddf"])
        assert ddf.shape == (18, 14, 10, 3)
        img, _ = read(out / e["files"]["image"])
        np.testing.assert_allclose(img, warp_input_by(work["vol"], out / e["files"]["ddf"], 3), atol=1e-5)


@pytest.fixture(scope="module")
def stack(work):
    """A (40, 30, 4) stack of different phantoms; slice k carries label k + 1 only, so any
    mixing of slices would show up as a foreign label."""
    imgs, labs = zip(*(cardiac_phantom(10 + k, 40) for k in range(4)))
    img = np.stack([im[:, 5:35] for im in imgs], -1).astype(np.float32)
    lab = np.stack([(lb[:, 5:35] > 0) * (k + 1) for k, lb in enumerate(labs)], -1).astype(np.int16)
    root = work["root"]
    nib.save(nib.Nifti1Image(img, AFFINE3), root / "stack.nii.gz")
    nib.save(nib.Nifti1Image(lab, AFFINE3), root / "stack_lbl.nii.gz")
    return root / "stack.nii.gz", root / "stack_lbl.nii.gz"


def test_augment_slicewise_deforms_each_slice_of_a_stack_on_its_own(work, stack, tmp_path, capsys):
    img_path, lbl_path = stack
    args = ["augment", "--checkpoint", work["ck2"], "--image", img_path, "--label", lbl_path, "--levels", "12",
            "--n", "2", "--device", "cpu", "--slicewise"]
    # a 3-D stack for a 2-D network is refused without --slicewise, and the message names it
    capsys.readouterr()
    assert run_cli(args[:-1] + ["--out", tmp_path / "refused"]) == 2 and not (tmp_path / "refused").exists()
    assert "--slicewise" in capsys.readouterr().err
    assert run_cli(args + ["--out", tmp_path / "a", "--batch", "1"]) == 0
    assert run_cli(args + ["--out", tmp_path / "b", "--batch", "8"]) == 0
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["geometry"]["slicewise"] and m["geometry"]["slices"] == 4 and m["run"]["slicewise"]
    src, _ = read(img_path)
    lab_in, _ = read(lbl_path)
    for e in m["outputs"]:
        check_sample(tmp_path / "a", e, img_path, lbl_path, 3)
        u, _ = read(tmp_path / "a" / e["files"]["ddf"])                  # (40, 30, 4, 3)
        assert np.all(u[..., 2] == 0)                                   # no through-plane motion
        moved = [np.abs(u[:, :, k, :2]).mean() for k in range(4)]
        assert min(moved) > 0.05
        assert not np.allclose(u[:, :, 0, :2], u[:, :, 1, :2])           # each slice has its own field
        img, _ = read(tmp_path / "a" / e["files"]["image"])
        lab, _ = read(tmp_path / "a" / e["files"]["label"])
        for k in range(4):
            # slice k is slice k of the original, warped once in-plane by its own field
            x = torch.from_numpy(src[:, :, k])[None, None]
            uk = torch.from_numpy(np.moveaxis(u[:, :, k, :2], -1, 0).copy())[None]
            np.testing.assert_allclose(img[:, :, k], spatial.warp(x, uk, padding_mode="border")[0, 0].numpy(),
                                       atol=1e-5)
            assert set(np.unique(lab[:, :, k])) == {0, k + 1}                # no label from another slice
            assert abs((lab[:, :, k] > 0).mean() - (lab_in[:, :, k] > 0).mean()) < 0.1
        # the manifest's metrics are the per-slice 2-D statistics of this field
        assert 0 < e["metrics"]["mean_pct"] <= e["metrics"]["max_pct"]
        ddf_b, _ = read(tmp_path / "b" / e["files"]["ddf"])
        np.testing.assert_allclose(u, ddf_b, atol=1e-4)                  # independent of --batch
    # a single slice stored as (H, W, 1) with --slicewise takes the plain 2-D path (same run record)
    one = ["augment", "--checkpoint", work["ck2"], "--image", work["slice"], "--levels", "3", "--n", "1",
           "--device", "cpu"]
    assert run_cli(one + ["--slicewise", "--out", tmp_path / "c"]) == 0
    assert run_cli(one + ["--out", tmp_path / "c"]) == 0                   # resumes: the same run
    # ... but a 3-D volume for a 3-D network is refused with it
    assert run_cli(["augment", "--checkpoint", work["ck3"], "--image", work["vol"], "--levels", "3", "--n", "1",
                    "--slicewise", "--out", tmp_path / "d", "--device", "cpu"]) == 2
    assert not (tmp_path / "d").exists()
    # a stack of two slices is fine: only the in-plane axes need 4 voxels
    two = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(read(img_path)[0][:, :, :2], AFFINE3), two)
    assert run_cli(["augment", "--checkpoint", work["ck2"], "--image", two, "--levels", "3", "--n", "1",
                    "--slicewise", "--out", tmp_path / "e", "--device", "cpu"]) == 0
    assert read(tmp_path / "e" / "ddf_L3_000.nii.gz")[0].shape == (40, 30, 2, 3)


def test_synth_slicewise_pairs(work, stack, tmp_path):
    img_path, lbl_path = stack
    out = tmp_path / "syn"
    assert run_cli(["synth", "--checkpoint", work["ck2"], "--image", img_path, "--label", lbl_path,
                    "--pairs", "20:14", "--out", out, "--device", "cpu", "--slicewise"]) == 0
    e = json.loads((out / "manifest.json").read_text())["outputs"][0]
    check_sample(out, e, img_path, lbl_path, 3)
    mv, _ = read(out / e["files"]["moving"])
    fx, _ = read(out / e["files"]["fixed"])
    u, _ = read(out / e["files"]["ddf"])
    assert np.all(u[..., 2] == 0)
    # phi_syn takes the moving stack to the fixed one, slice by slice
    warped = spatial.warp(torch.from_numpy(np.moveaxis(mv, -1, 0))[:, None],
                          torch.from_numpy(np.moveaxis(u[..., :2], (2, 3), (0, 1)).copy()), padding_mode="border")
    ratio = np.abs(np.moveaxis(warped[:, 0].numpy(), 0, -1) - fx).mean() / np.abs(mv - fx).mean()
    assert ratio < 0.3, ratio


def test_geometry_maps_network_voxels_to_input_voxels_in_world_units():
    """A field on the isotropic network grid comes back in input voxels: same mm, per axis."""
    g = InputGrid((40, 30), (1.5, 1.0), (32, 32))      # 60 x 30 mm -> 1.875 mm voxels, 32 x 16 + padding
    assert g.new == (32, 16) and g.pads == [(0, 0), (8, 8)]
    const = torch.tensor([0.8, -1.3]).view(1, 2, 1, 1).expand(1, 2, 32, 32).contiguous()
    u = g.ddf_to_input(const)
    mm = u[0].flatten(1).mean(1) * torch.tensor([1.5, 1.0])
    torch.testing.assert_close(mm, torch.tensor([0.8, -1.3]) * 1.875, atol=1e-5, rtol=0)
    torch.testing.assert_close(u[0].flatten(1).std(1), torch.zeros(2), atol=1e-5, rtol=0)
    # a linear field u_net(y) = a (y - c) is sampled exactly at every input voxel's network position
    y = spatial.identity_grid((32, 32))[None].double()
    a, c = 0.05, 12.0
    u = g.ddf_to_input(a * (y - c))
    x = spatial.identity_grid((40, 30)).double()
    pos = [(x[0] + 0.5) / 1.25 - 0.5, (x[1] + 0.5) / 1.875 - 0.5 + 8]
    # (outside the outermost network voxel centres, within half a voxel of the edge, it is held constant)
    clamped = [p.clamp(0, 31) for p in pos]
    expect = torch.stack([1.25 * a * (clamped[0] - c), 1.875 * a * (clamped[1] - c)])[None]
    torch.testing.assert_close(u, expect, atol=1e-9, rtol=0)
    assert bool((pos[0] < 0).any()) and bool((pos[1] > 7.5).all() & (pos[1] < 23.5).all())  # padding skipped


def test_overwrite_replaces_another_run_and_drops_its_stale_outputs(work, tmp_path):
    out = tmp_path / "o"
    base = ["augment", "--checkpoint", work["ck2"], "--image", work["plain"], "--levels", "3", "--out", out,
            "--device", "cpu"]
    assert run_cli(base + ["--n", "3"]) == 0
    assert run_cli(base + ["--n", "2", "--seed", "1"]) == 2            # a different run: refused
    assert run_cli(base + ["--n", "2", "--seed", "1", "--overwrite"]) == 0
    assert {p.name for p in out.iterdir()} == {f"{k}_L3_{i:03d}.nii.gz" for k in ("img", "ddf") for i in range(2)} | {"manifest.json"}
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1


# ---------------------------------------------------------------- kill and resume

def test_augment_resumes_after_sigkill(work, tmp_path):
    out = tmp_path / "killed"
    args = ["augment", "--checkpoint", str(work["ck2"]), "--image", str(work["slice"]), "--label",
            str(work["slice_lbl"]), "--levels", "3,12", "--n", "5", "--batch", "1", "--out", str(out),
            "--device", "cpu"]
    code = f"import sys; from drdm.cli import main; sys.exit(main({args!r}))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "manifest.json"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                if json.loads(manifest.read_text())["outputs"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()[-500:]!r}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = json.loads(manifest.read_text())
    assert not before["complete"] and 1 <= len(before["outputs"]) < 10
    kept = {name: (out / name).read_bytes() for e in before["outputs"] for name in e["files"].values()}

    assert run_cli(args) == 0                                           # same arguments: resume
    after = json.loads(manifest.read_text())
    assert after["complete"] and len(after["outputs"]) == 10
    names = {f"{k}_L{lv}_{i:03d}.nii.gz" for k in ("img", "lbl", "ddf") for lv in (3, 12) for i in range(5)}
    assert {p.name for p in out.iterdir()} == names | {"manifest.json"}         # no temporary files left
    for name, data in kept.items():
        assert (out / name).read_bytes() == data                                  # completed outputs kept
    for e in after["outputs"]:
        for role, name in e["files"].items():
            assert sha256(out / name) == e["sha256"][role]
    # the resumed run equals an uninterrupted one
    assert run_cli(args[:-4] + ["--out", str(tmp_path / "whole"), "--device", "cpu"]) == 0
    for name in sorted(names):
        if name.startswith("ddf"):
            np.testing.assert_allclose(read(out / name)[0], read(tmp_path / "whole" / name)[0], atol=1e-4)
        elif name.startswith("lbl"):
            assert (read(out / name)[0] != read(tmp_path / "whole" / name)[0]).mean() < 0.01


# ---------------------------------------------------------------- synth

def test_synth_pairs(work, tmp_path):
    out = tmp_path / "syn"
    rc = run_cli(["synth", "--checkpoint", work["ck2"], "--image", work["slice"], "--label", work["slice_lbl"],
                  "--pairs", "20:14,6:2", "--n", "2", "--out", out, "--device", "cpu"])
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and m["pairs"] == [[20, 14], [6, 2]] and len(m["outputs"]) == 4
    roles = {"moving", "fixed", "moving_label", "fixed_label", "ddf"}
    for e in m["outputs"]:
        assert set(e["files"]) == roles and e["t_prime"] == [e["t_aug"], e["t_syn"]]
        check_sample(out, e, work["slice"], work["slice_lbl"], 2)
        mv, _ = read(out / e["files"]["moving"])
        fx, _ = read(out / e["files"]["fixed"])
        u, _ = read(out / e["files"]["ddf"])
        ut = torch.from_numpy(np.moveaxis(u[:, :, 0], -1, 0).copy())[None]
        warped = spatial.warp(torch.from_numpy(mv[:, :, 0])[None, None], ut, padding_mode="border")[0, 0].numpy()
        # phi_syn takes moving to fixed (pull-back), up to one extra interpolation (blur
        # dominates for the sub-voxel fields of the small pair)
        ratio = np.abs(warped - fx[:, :, 0]).mean() / np.abs(mv - fx).mean()
        assert ratio < (0.3 if e["t_syn"] == 14 else 0.95), (e["key"], ratio)
    assert len({p.name for p in out.iterdir()}) == 4 * 5 + 1


# ---------------------------------------------------------------- table1

def test_table1_on_phantoms(work, tmp_path, capsys):
    rc = run_cli(["table1", "--checkpoint", work["ck2"], "--phantoms", "2", "--levels", "3,10",
                  "--out", tmp_path / "r" / "t1.json", "--csv", tmp_path / "t1.csv", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "max |phi|" in printed and "recovered" in printed
    doc = json.loads((tmp_path / "r" / "t1.json").read_text())
    assert doc["levels"] == [3, 10] and doc["size"] == [32, 32] and doc["n_images"] == 2
    assert doc["checkpoint_sha256"] == sha256(work["ck2"])
    for lv in ("3", "10"):
        for kind in ("random", "recovered"):
            assert set(doc["results"][lv][kind]) == {"max_pct", "mean_pct", "negJ_pct"}
    assert doc["results"]["10"]["random"]["mean_pct"]["mean"] > doc["results"]["3"]["random"]["mean_pct"]["mean"]
    rows = (tmp_path / "t1.csv").read_text().splitlines()
    assert rows[0].startswith("level,field,max_pct_mean") and len(rows) == 1 + 4


def test_table1_on_middle_slices_of_volumes(work, tmp_path, capsys):
    rc = run_cli(["table1", "--checkpoint", work["ck2"], "--images", work["vol"], work["plain"],
                  "--levels", "4", "--out", tmp_path / "t.json", "--device", "cpu"])
    assert rc == 0
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["n_images"] == 2 and doc["images"] == [str(work["vol"]), str(work["plain"])]


@pytest.mark.skipif(OFFICIAL_CKPT is None, reason=shared.absent_reason("the release's 2-D checkpoint"))
def test_official_weights_run_on_a_256_grid():
    net = load_network(OFFICIAL_CKPT)
    assert network_size(net) == (256, 256) and net.config.timesteps == 80


def test_every_command_has_its_own_module_and_handler():
    """drdm/cli: one module per command, each registering a handler of its own."""
    import argparse
    from drdm.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == ["augment", "experiment", "fewshot", "synth", "table1", "train"]
    for name, parser in sub.choices.items():
        func = parser.get_default("func")
        assert func.__name__ == f"cmd_{name}" and func.__module__ == f"drdm.cli.{name}"
        assert parser.description and parser.format_help().startswith("usage: drdm " + name)
