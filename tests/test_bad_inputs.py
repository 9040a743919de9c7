"""Malformed inputs across the CLI, the loaders and the public API: each is refused with the
right exception (exit code 2 for the CLI), one line naming the problem, and nothing written.

Each row builds its bad input in a fresh folder ``ws`` and returns either an argv list for
``drdm.cli.main`` or a zero-argument callable. The folder must be byte-for-byte unchanged
afterwards (no partial or temporary file).
"""
import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
import torch

from drdm import sampling, spatial
from drdm.checkpoint import CheckpointError, load_official
from drdm.cli import main
from drdm.data import DataError, load_nifti, preprocess, save_nifti
from drdm.diffusion import DiffusionConfig, ForwardProcess
from drdm.network import DRDMNet, NetworkConfig
from drdm import load as load_network
from drdm.checkpoint import load as load_model
from drdm.training import TrainConfig, save_checkpoint

AFFINE = np.array([[1.5, 0, 0, 10.0], [0, 1.0, 0, -5.0], [0, 0, 1.0, 3.0], [0, 0, 0, 1]])
CLI = 2          # expected exit code of a refused command


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    """Valid inputs shared by all rows (never modified)."""
    root = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    net2 = DRDMNet(NetworkConfig(ndim=2))
    save_checkpoint(root / "ck2.pth", net2, TrainConfig(image_size=32))
    save_checkpoint(root / "ck3.pth", DRDMNet(NetworkConfig(ndim=3)), TrainConfig(ndim=3, image_size=16))
    rng = np.random.default_rng(0)
    img = rng.random((40, 30)).astype(np.float32)
    lab = np.zeros((40, 30), np.int16)
    lab[10:30, 8:20] = 1
    lab[15:22, 10:15] = 2
    nib.save(nib.Nifti1Image(img, AFFINE), root / "img.nii.gz")
    nib.save(nib.Nifti1Image(lab, AFFINE), root / "lbl.nii.gz")
    return {"root": root, "ck2": root / "ck2.pth", "ck3": root / "ck3.pth", "img": root / "img.nii.gz",
            "lbl": root / "lbl.nii.gz", "net2": net2.eval(), "image": img, "label": lab}


# ---------------------------------------------------------------- builders of bad files

def nifti(path, array, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(array), affine), path)
    return path


def truncated(path, src, fraction=0.5):
    data = Path(src).read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write(path, data):
    """Write bytes or text and return the path."""
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def saved(obj, path):
    torch.save(obj, path)
    return path


def truncated_nii(ws, image):
    """An uncompressed NIfTI whose header is intact but whose voxel data is cut short."""
    full = nifti(ws / "full.nii", image)
    out = truncated(ws / "t.nii", full, 0.6)
    full.unlink()
    return out


def gzip_corrupt(ws):
    """A .nii.gz whose deflate stream is broken right after the gzip header."""
    raw = ws / "raw.nii"
    nifti(raw, np.add.outer(np.arange(64.0), np.arange(64.0)).astype(np.float32))
    data = bytearray(gzip.compress(raw.read_bytes()))
    raw.unlink()
    for k in range(10, 26):
        data[k] ^= 0xFF
    return write(ws / "corrupt.nii.gz", bytes(data))


def gzip_bad_crc(ws):
    """Random int16 voxels (stored, uncompressed deflate blocks) with flipped payload bytes: the
    stream stays decodable and every value is a valid number; only the gzip CRC-32 tells."""
    raw = ws / "raw.nii"
    nifti(raw, np.random.default_rng(2).integers(0, 1000, (64, 64), dtype=np.int16))
    data = bytearray(gzip.compress(raw.read_bytes(), compresslevel=0))
    raw.unlink()
    for k in range(len(data) // 2, len(data) // 2 + 16):
        data[k] ^= 0xFF
    return write(ws / "badcrc.nii.gz", bytes(data))


def declares(ws, shape=(30000, 30000), dtype=np.float32, payload=200_000, name="huge.nii.gz"):
    """A small .nii.gz whose header declares a huge image: ``payload`` bytes of random data follow it."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\0" * 4 + np.random.default_rng(0).bytes(payload)
    return write(ws / name, gzip.compress(raw) if name.endswith(".gz") else raw)


class _Payload:
    """Pickles as a call to os.getpid: weights_only loading must refuse it, not run it."""

    def __reduce__(self):
        return (os.getpid, ())


def ckpt_int(ws, res):
    ck = torch.load(res["ck2"], weights_only=True)
    ck["model"] = {k: v.long() for k, v in ck["model"].items()}
    torch.save(ck, ws / "int.pth")
    return ws / "int.pth"


def ckpt_official_int(ws, res):
    torch.save({k: v.long() for k, v in res["net2"].state_dict().items()}, ws / "off_int.pth")
    return ws / "off_int.pth"


def ckpt_nan(ws, res):
    ck = torch.load(res["ck2"], weights_only=True)
    ck["model"]["conv_out.weight"] = torch.full_like(ck["model"]["conv_out.weight"], float("nan"))
    torch.save(ck, ws / "nan.pth")
    return ws / "nan.pth"


def ckpt_pickled(ws, res):
    torch.save({"model": _Payload()}, ws / "pickled.pth")
    return ws / "pickled.pth"


def ckpt_no_config(ws, res):
    torch.save({"format": "drdm-checkpoint-1", "model": {"w": torch.zeros(2)}}, ws / "nocfg.pth")
    return ws / "nocfg.pth"


# ---------------------------------------------------------------- CLI argv helpers

def aug(res, ws, image=None, label=None, ckpt=None, levels="3", n="1", extra=()):
    argv = ["augment", "--checkpoint", ckpt or res["ck2"], "--image", image or res["img"],
            "--levels", levels, "--n", n, "--out", ws / "out", "--device", "cpu"]
    if label is not None:
        argv += ["--label", label]
    return [str(a) for a in [*argv, *extra]]


def synth(res, ws, pairs):
    return [str(a) for a in ["synth", "--checkpoint", res["ck2"], "--image", res["img"], "--pairs", pairs,
                             "--out", ws / "out", "--device", "cpu"]]


def table(res, ws, *extra):
    return [str(a) for a in ["table1", "--checkpoint", res["ck2"], "--phantoms", "1", "--levels", "3",
                             "--device", "cpu", *extra]]


def unwritable(ws, res):
    out = ws / "out"
    out.mkdir()
    out.chmod(0o500)
    if os.access(out, os.W_OK):
        out.chmod(0o700)
        pytest.skip("chmod 500 leaves the folder writable here (running as root)")
    return aug(res, ws)


def symlinked_out(ws, res):
    (ws / "elsewhere").mkdir()
    (ws / "out").symlink_to(ws / "elsewhere", target_is_directory=True)
    return aug(res, ws)


def symlinked_file(ws, res):
    (ws / "out").mkdir()
    (ws / "out" / "img_L3_000.nii.gz").symlink_to(ws / "target.nii.gz")      # dangling
    return aug(res, ws)


def existing_output(ws, res):
    (ws / "out").mkdir()
    (ws / "out" / "ddf_L3_000.nii.gz").write_bytes(b"someone else's file")
    return aug(res, ws)


def other_run(ws, res):
    (ws / "out").mkdir()
    (ws / "out" / "manifest.json").write_text(json.dumps({"run": {"command": "augment", "seed": 99}, "outputs": []}))
    return aug(res, ws)


def out_is_file(ws, res):
    (ws / "out").write_text("not a folder")
    return aug(res, ws)


def table_out_exists(ws, res):
    (ws / "t.json").write_text("{}")
    return table(res, ws, "--out", ws / "t.json")


def table_out_symlink(ws, res):
    (ws / "t.json").symlink_to(ws / "real.json")
    return table(res, ws, "--out", ws / "t.json")


# ---------------------------------------------------------------- the table

@dataclass
class Case:
    id: str
    build: Callable          # (ws, res) -> argv list for the CLI, or a zero-argument callable
    expect: object           # CLI (exit code 2) or an exception type
    phrase: object           # a key phrase (or a tuple: any of them) in the one-line message
    xfail: str = ""          # reason, when the package lacks the check


CASES = [
    # -- CLI: images and labels
    Case("cli-missing-image", lambda ws, r: aug(r, ws, image=ws / "nope.nii.gz"), CLI, "no such file"),
    Case("cli-empty-nifti", lambda ws, r: aug(r, ws, image=write(ws / "e.nii.gz", b"")),
         CLI, "not a NIfTI file"),
    Case("cli-truncated-gz", lambda ws, r: aug(r, ws, image=truncated(ws / "t.nii.gz", r["img"])), CLI,
         "truncated or corrupt gzip"),
    Case("cli-gzip-corrupt", lambda ws, r: aug(r, ws, image=gzip_corrupt(ws)), CLI, "corrupt gzip"),
    Case("cli-gzip-bad-crc", lambda ws, r: aug(r, ws, image=gzip_bad_crc(ws)), CLI, "CRC check failed"),
    Case("cli-truncated-nii", lambda ws, r: aug(r, ws, image=truncated_nii(ws, r["image"])), CLI,
         "truncated or corrupt NIfTI"),
    Case("cli-nan-image", lambda ws, r: aug(r, ws, image=nifti(ws / "n.nii.gz", np.where(
        r["image"] > 0.5, np.nan, r["image"]).astype(np.float32))), CLI, "NaN or Inf"),
    Case("cli-inf-image", lambda ws, r: aug(r, ws, image=nifti(ws / "i.nii.gz", np.where(
        r["image"] > 0.9, np.inf, r["image"]).astype(np.float32))), CLI, "NaN or Inf"),
    Case("cli-4d-image", lambda ws, r: aug(r, ws, image=nifti(ws / "4d.nii.gz", np.zeros((8, 8, 4, 2), np.float32))),
         CLI, "4-D image"),
    Case("cli-1d-image", lambda ws, r: aug(r, ws, image=nifti(ws / "1d.nii.gz", np.zeros(16, np.float32))),
         CLI, "1-D image"),
    Case("cli-label-non-integer", lambda ws, r: aug(r, ws, label=nifti(ws / "l.nii.gz", r["label"] + 0.5)), CLI,
         "non-integer"),
    Case("cli-label-negative", lambda ws, r: aug(r, ws, label=nifti(ws / "l.nii.gz", r["label"] - 1)), CLI,
         "negative label"),
    Case("cli-label-shape", lambda ws, r: aug(r, ws, label=nifti(ws / "l.nii.gz", r["label"][:, :20])), CLI,
         "differs from image shape"),
    Case("cli-label-grid", lambda ws, r: aug(r, ws, label=nifti(ws / "l.nii.gz", r["label"], np.eye(4))), CLI,
         "label grid (affine) differs"),
    # -- CLI: values
    Case("cli-level-too-big", lambda ws, r: aug(r, ws, levels="3,80"), CLI, "out of range"),
    Case("cli-level-negative", lambda ws, r: aug(r, ws, levels="-1"), CLI, "out of range"),
    Case("cli-n-zero", lambda ws, r: aug(r, ws, n="0"), CLI, "must be a positive integer"),
    Case("cli-n-negative", lambda ws, r: aug(r, ws, n="-3"), CLI, "must be a positive integer"),
    Case("cli-levels-text", lambda ws, r: aug(r, ws, levels="thirty"), CLI, "comma-separated integers"),
    Case("cli-device-missing", lambda ws, r: aug(r, ws, extra=["--device", "cuda:99"]), CLI, "not available"),
    # -- CLI: checkpoints
    Case("cli-missing-checkpoint", lambda ws, r: aug(r, ws, ckpt=ws / "none.pth"), CLI, "no such checkpoint"),
    Case("cli-junk-checkpoint", lambda ws, r: aug(r, ws, ckpt=write(ws / "j.pth", np.random.default_rng(0).bytes(300))),
         CLI, ("refused", "not a readable")),
    Case("cli-truncated-checkpoint", lambda ws, r: aug(r, ws, ckpt=truncated(ws / "t.pth", r["ck2"])), CLI,
         "not a readable torch checkpoint"),
    Case("cli-pickled-checkpoint", lambda ws, r: aug(r, ws, ckpt=ckpt_pickled(ws, r)), CLI, "refused"),
    Case("cli-int-checkpoint", lambda ws, r: aug(r, ws, ckpt=ckpt_int(ws, r)), CLI, "non-floating-point"),
    Case("cli-int-official-state-dict", lambda ws, r: aug(r, ws, ckpt=ckpt_official_int(ws, r)), CLI,
         "non-floating-point"),
    Case("cli-nan-weights", lambda ws, r: aug(r, ws, ckpt=ckpt_nan(ws, r)), CLI, "NaN or Inf in weights"),
    Case("cli-3d-checkpoint-2d-image", lambda ws, r: aug(r, ws, ckpt=r["ck3"]), CLI, "for a 3-D network"),
    Case("cli-foreign-state-dict", lambda ws, r: aug(r, ws, ckpt=saved({"a": torch.zeros(3)}, ws / "f.pth")), CLI,
         "not an official DRDM checkpoint"),
    Case("cli-checkpoint-without-config", lambda ws, r: aug(r, ws, ckpt=ckpt_no_config(ws, r)), CLI, "malformed"),
    # -- CLI: outputs
    Case("cli-out-unwritable", unwritable, CLI, "not writable"),
    Case("cli-out-symlink", symlinked_out, CLI, "symlink"),
    Case("cli-output-file-symlink", symlinked_file, CLI, "symlink"),
    Case("cli-existing-output", existing_output, CLI, "exists"),
    Case("cli-other-run-manifest", other_run, CLI, "different run"),
    Case("cli-out-is-a-file", out_is_file, CLI, "not a folder"),
    Case("cli-out-under-a-file", lambda ws, r: aug(r, ws, extra=["--out", write(ws / "f", "x") / "sub"]), CLI,
         "is not a folder"),
    Case("table1-out-under-a-file", lambda ws, r: table(r, ws, "--csv", write(ws / "f", "x") / "t.csv"), CLI,
         "is not a folder"),
    # -- CLI: synth and table1
    Case("synth-bad-pairs", lambda ws, r: synth(r, ws, "30-10"), CLI, "pairs must look like"),
    Case("synth-syn-level", lambda ws, r: synth(r, ws, "10:200"), CLI, "out of range"),
    Case("table1-huge-size", lambda ws, r: table(r, ws, "--size", "100000"), CLI, "too large"),
    Case("table1-size-not-8", lambda ws, r: table(r, ws, "--size", "36"), CLI, "multiple of 8"),
    Case("table1-out-exists", table_out_exists, CLI, "exists"),
    Case("table1-out-symlink", table_out_symlink, CLI, "symlink"),
    Case("table1-level", lambda ws, r: table(r, ws, "--levels", "90"), CLI, "out of range"),
    Case("table1-nan-image", lambda ws, r: ["table1", "--checkpoint", str(r["ck2"]), "--images", str(nifti(
        ws / "n.nii.gz", np.full((8, 8), np.nan, np.float32))), "--device", "cpu"], CLI, "NaN or Inf"),
    Case("table1-two-sources", lambda ws, r: table(r, ws, "--images", r["img"]), CLI, "not allowed with"),
    # -- loaders
    Case("load-empty", lambda ws, r: (lambda p: lambda: load_nifti(p))(write(ws / "e.nii", b"")), DataError,
         "not a NIfTI file"),
    Case("load-text-as-nifti", lambda ws, r: (lambda p: lambda: load_nifti(p))(write(ws / "t.nii", "hello " * 100)),
         DataError, "no NIfTI-1/2 header"),
    Case("load-gzip-corrupt", lambda ws, r: (lambda p: lambda: load_nifti(p))(gzip_corrupt(ws)), DataError,
         "corrupt gzip"),
    Case("load-gzip-bad-crc", lambda ws, r: (lambda p: lambda: load_nifti(p))(gzip_bad_crc(ws)), DataError,
         "corrupt gzip"),
    Case("load-4d", lambda ws, r: (lambda p: lambda: load_nifti(p))(nifti(ws / "4.nii.gz", np.zeros((4, 4, 4, 3)))),
         DataError, "4-D image"),
    Case("load-label-float", lambda ws, r: (lambda p: lambda: load_nifti(p, label=True))(
        nifti(ws / "l.nii.gz", r["label"] * 0.3)), DataError, "non-integer"),
    Case("load-label-negative", lambda ws, r: (lambda p: lambda: load_nifti(p, label=True))(
        nifti(ws / "l.nii.gz", -r["label"])), DataError, "negative"),
    Case("save-existing", lambda ws, r: (lambda p: lambda: save_nifti(p, r["image"]))(
        nifti(ws / "x.nii.gz", r["image"])), DataError, "exists"),
    Case("save-4d", lambda ws, r: lambda: save_nifti(ws / "x.nii.gz", np.zeros((4, 4, 4, 2), np.float32)),
         DataError, "4-D image"),
    Case("save-nan", lambda ws, r: lambda: save_nifti(ws / "x.nii.gz", np.full((4, 4), np.nan, np.float32)),
         DataError, "NaN or Inf"),
    Case("save-extension", lambda ws, r: lambda: save_nifti(ws / "x.png", r["image"]), DataError, "must end with .nii"),
    Case("preprocess-1d", lambda ws, r: lambda: preprocess(np.zeros(16), 8), ValueError, "2-D or 3-D"),
    # -- drdm.spatial
    Case("warp-ddf-components", lambda ws, r: lambda: spatial.warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 8, 8)),
         ValueError, "one component per spatial axis"),
    Case("warp-int-image-linear", lambda ws, r: lambda: spatial.warp(torch.zeros(1, 1, 8, 8, dtype=torch.long),
                                                                    torch.zeros(1, 2, 8, 8)), ValueError, "floating-point"),
    Case("warp-label-non-integer", lambda ws, r: lambda: spatial.warp(torch.full((1, 1, 8, 8), 0.5),
                                                                     torch.zeros(1, 2, 8, 8), mode="label"),
         ValueError, "non-integer"),
    Case("warp-nan-ddf", lambda ws, r: lambda: spatial.warp(torch.zeros(1, 1, 8, 8), torch.full((1, 2, 8, 8), np.nan)),
         ValueError, "NaN or Inf"),
    Case("warp-numpy", lambda ws, r: lambda: spatial.warp(np.zeros((1, 1, 8, 8)), torch.zeros(1, 2, 8, 8)),
         TypeError, "torch.Tensor"),
    Case("compose-shapes", lambda ws, r: lambda: spatial.compose(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 9)),
         ValueError, "spatial shape"),
    Case("jacobian-one-voxel", lambda ws, r: lambda: spatial.jacobian_det(torch.zeros(1, 2, 1, 8)), ValueError,
         "at least 2 voxels"),
    Case("resize-ddf-size", lambda ws, r: lambda: spatial.resize_ddf(torch.zeros(1, 2, 8, 8), (4,)), ValueError,
         "size must be"),
    # -- drdm.diffusion
    Case("diffusion-ndim", lambda ws, r: lambda: DiffusionConfig(ndim=4), ValueError, "ndim must be 2 or 3"),
    Case("diffusion-tiny-size", lambda ws, r: lambda: DiffusionConfig(image_size=2), ValueError, ">= 4"),
    Case("diffusion-huge-size", lambda ws, r: lambda: DiffusionConfig(image_size=100_000), ValueError, "too large"),
    Case("forward-t-range", lambda ws, r: lambda: ForwardProcess(DiffusionConfig(image_size=16)).sample(80),
         ValueError, "t must lie in"),
    Case("forward-t-float", lambda ws, r: lambda: ForwardProcess(DiffusionConfig(image_size=16)).sample(
        torch.tensor([1.5])), ValueError, "integer"),
    Case("q-sample-size", lambda ws, r: lambda: ForwardProcess(DiffusionConfig(image_size=16)).q_sample(
        torch.zeros(1, 1, 8, 8), 3), ValueError, "must have shape"),
    # -- drdm.network
    Case("net-side-not-8", lambda ws, r: lambda: r["net2"](torch.zeros(1, 1, 20, 20), 3), ValueError,
         "divisible by 8"),
    Case("net-t-range", lambda ws, r: lambda: r["net2"](torch.zeros(1, 1, 16, 16), 80), ValueError, "t must lie in"),
    Case("net-3d-into-2d", lambda ws, r: lambda: r["net2"](torch.zeros(1, 1, 8, 8, 8), 3), ValueError,
         "2-D network"),
    Case("net-int-image", lambda ws, r: lambda: r["net2"](torch.zeros(1, 1, 8, 8, dtype=torch.long), 3), ValueError,
         "floating point"),
    Case("net-config-variant", lambda ws, r: lambda: NetworkConfig(variant="mine"), ValueError, "variant"),
    # -- drdm.training and drdm.checkpoint
    Case("train-size-not-8", lambda ws, r: lambda: TrainConfig(image_size=30), ValueError, "divisible by 8"),
    Case("train-unknown-option", lambda ws, r: lambda: TrainConfig.from_dict({"bogus": 1}), ValueError,
         "unknown training option"),
    Case("load-model-pickled", lambda ws, r: (lambda p: lambda: load_model(p))(ckpt_pickled(ws, r)), CheckpointError,
         "refused"),
    Case("load-model-truncated", lambda ws, r: (lambda p: lambda: load_model(p))(truncated(ws / "t.pth", r["ck2"])),
         CheckpointError, "not a readable torch checkpoint"),
    Case("load-model-int", lambda ws, r: (lambda p: lambda: load_model(p))(ckpt_int(ws, r)), CheckpointError,
         "non-floating-point"),
    Case("load-model-no-config", lambda ws, r: (lambda p: lambda: load_model(p))(ckpt_no_config(ws, r)),
         CheckpointError, "malformed"),
    Case("load-network-int", lambda ws, r: (lambda p: lambda: load_network(p))(ckpt_int(ws, r)), CheckpointError,
         "non-floating-point"),
    Case("load-official-ndim", lambda ws, r: (lambda p: lambda: load_official(p, ndim=3))(
        saved(r["net2"].state_dict(), ws / "o.pth")), CheckpointError, "2-D checkpoint"),
    # -- drdm.sampling
    Case("deform-level", lambda ws, r: lambda: sampling.deform(r["net2"], torch.zeros(1, 1, 16, 16), 80), ValueError,
         "must lie in"),
    Case("deform-3d-image", lambda ws, r: lambda: sampling.deform(r["net2"], torch.zeros(1, 1, 8, 8, 8), 3),
         ValueError, "3-D image for a 2-D network"),
    Case("augment-n-zero", lambda ws, r: lambda: next(sampling.augment(r["net2"], torch.zeros(1, 1, 16, 16), None,
                                                                       [3], 0)), ValueError, "n must be positive"),
    # -- hostile sizes (issue: bounded memory): refused from the header, before any allocation
    Case("nifti-declares-more-than-it-holds", lambda ws, r: (lambda p: lambda: load_nifti(p))(
        declares(ws, (900, 900))), DataError, "but the file holds"),
    Case("nifti-raw-declares-more-than-it-holds", lambda ws, r: (lambda p: lambda: load_nifti(p))(
        declares(ws, (900, 900), name="huge.nii")), DataError, "but the file holds"),
    Case("nifti-declares-over-the-budget", lambda ws, r: (lambda p: lambda: load_nifti(p))(declares(ws)),
         DataError, "over the"),
    Case("cli-nifti-declares-30000-squared", lambda ws, r: aug(r, ws, image=declares(ws)), CLI, "declares"),
    Case("cli-n-a-billion", lambda ws, r: aug(r, ws, n="1000000000"), CLI, "at most 10,000"),
    Case("cli-n-times-levels", lambda ws, r: aug(r, ws, n="4000", levels="3,4,5"), CLI, "at most 10,000"),
    Case("cli-synth-n-a-billion", lambda ws, r: [*synth(r, ws, "3:2"), "--n", "1000000000"], CLI, "at most 10,000"),
    Case("augment-batch", lambda ws, r: lambda: next(sampling.augment(r["net2"], torch.zeros(2, 1, 16, 16), None,
                                                                      [3], 1)), ValueError, "one image"),
]


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_symlink(), p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=False)]
                                               if c.xfail else []) for c in CASES])
def test_bad_input_is_refused_cleanly(case, res, tmp_path, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    target = case.build(ws, res)
    before = _snapshot(ws)
    capsys.readouterr()
    try:
        if case.expect == CLI:
            assert isinstance(target, list), "CLI rows return an argv list"
            try:
                rc = main(target)
            except SystemExit as e:                       # argparse refusals
                rc = e.code
            err = capsys.readouterr().err
            assert rc == CLI, err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("drdm: error:"), err
            message = lines[0]
        else:
            with pytest.raises(case.expect) as info:
                target()
            message = str(info.value)
            assert "\n" not in message.strip(), message
        phrases = case.phrase if isinstance(case.phrase, tuple) else (case.phrase,)
        assert any(p in message for p in phrases), message
        assert _snapshot(ws) == before, "the refused call left or changed files"
    finally:
        for p in ws.rglob("*"):                           # let pytest clean up chmod-ed folders
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o700)


def test_unwritable_folder_is_refused_even_where_chmod_cannot_tell(res, tmp_path, monkeypatch, capsys):
    """As root, chmod 500 leaves a folder writable; check the refusal path itself with os.access patched."""
    import drdm.outputs as outputs
    out = tmp_path / "ws" / "out"
    out.mkdir(parents=True)
    real = os.access
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: False if Path(p) == out else real(p, mode))
    assert main(aug(res, tmp_path / "ws")) == CLI
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not writable" in err and list(out.iterdir()) == []


# ---------------------------------------------------------------- memory and disk (checked from outside)

def _child(code: str, limit_gib: float = 6.0):
    """Run ``code`` in a fresh interpreter whose address space is capped (a regression fails inside
    the cap, not on the machine); returns (rc, stdout, stderr)."""
    import subprocess
    import sys
    pre = ("import resource; "
           f"resource.setrlimit(resource.RLIMIT_AS, ({int(limit_gib * 2 ** 30)}, {int(limit_gib * 2 ** 30)}))\n")
    p = subprocess.run([sys.executable, "-c", pre + code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    return p.returncode, p.stdout, p.stderr


def test_a_nifti_declaring_30000_squared_exits_2_with_one_line_and_little_memory(res, tmp_path):
    """The issue's case: a small .nii.gz declaring a 30000 x 30000 float32 image (3.4 GiB)."""
    path = declares(tmp_path)
    assert path.stat().st_size < 1_000_000
    out = tmp_path / "out"
    rc, stdout, err = _child(
        "import resource, sys\nfrom drdm.cli import main\n"
        f"rc = main(['augment', '--checkpoint', {str(res['ck2'])!r}, '--image', {str(path)!r}, '--levels', '3', "
        f"'--n', '1', '--out', {str(out)!r}, '--device', 'cpu'])\n"
        # VmHWM: this process image's own peak (ru_maxrss would carry the forking parent's, pytest's, RSS)
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
        "sys.exit(rc)")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "declares a 30000 x 30000 float32" in lines[0], err
    assert int(stdout.split()[-1]) / 1024 < 500, f"peak RSS {int(stdout.split()[-1]) / 1024:.0f} MiB"
    assert not out.exists()


def test_a_billion_samples_are_refused_before_anything_loads(tmp_path):
    """Refused at once: the checkpoint and image named do not even exist, yet the message is about --n."""
    rc, _, err = _child("import sys\nfrom drdm.cli import main\nsys.exit(main(['augment', '--checkpoint', "
                        "'missing.pth', '--image', 'missing.nii.gz', '--levels', '3', '--n', '1000000000', "
                        "'--out', 'o']))")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "at most 10,000 samples" in lines[0], err


def test_the_memory_budget_is_stated_and_overridable(tmp_path, monkeypatch):
    from drdm.data.nifti import MAX_LOAD_MB, max_load_bytes
    path = nifti(tmp_path / "img.nii.gz", np.zeros((64, 64), np.float32))
    assert max_load_bytes() == MAX_LOAD_MB * 2 ** 20
    load_nifti(path)
    monkeypatch.setenv("DRDM_MAX_LOAD_MB", "0.01")                 # 10 KiB: a 64 x 64 float32 needs 32 KiB
    with pytest.raises(DataError, match="over the 10,485 bytes budget.*DRDM_MAX_LOAD_MB"):
        load_nifti(path)
    monkeypatch.setenv("DRDM_MAX_LOAD_MB", "lots")
    with pytest.raises(DataError, match="DRDM_MAX_LOAD_MB must be a number"):
        load_nifti(path)


def test_memory_error_while_loading_is_bad_input(tmp_path, monkeypatch):
    path = nifti(tmp_path / "img.nii.gz", np.zeros((16, 16), np.float32))

    def no_memory(*a, **k):
        raise MemoryError
    monkeypatch.setattr(nib, "load", no_memory)
    with pytest.raises(DataError, match="not enough memory") as info:
        load_nifti(path)
    assert "\n" not in str(info.value)
