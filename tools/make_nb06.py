"""Writes notebooks/06_your_data.ipynb; then store ci outputs with
    papermill -k python3 notebooks/06_your_data.ipynb notebooks/06_your_data.ipynb --cwd .
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nbtools import COLAB_CELL, Notebook  # noqa: E402

nb = Notebook()
md, code = nb.md, nb.code

md(r"""
# 6. Your own data: DRDM augmentation of a NIfTI image and its labels

`drdm augment` runs Algorithm 3 on any 2-D image, 2-D slice stored as `(H, W, 1)`, or 3-D volume
in NIfTI format, with or without a label map; with `--slicewise`, a 2-D network deforms every slice
of a 3-D stack (e.g. a cardiac short-axis stack) with its own field, and this notebook passes it
when a stack meets a 2-D checkpoint. It resamples the input to the network's isotropic
grid, runs DRDM there, brings the deformation field back to the input grid (in voxels of the
input), and warps the **original** input at its own resolution, so every output overlays the input
in world coordinates. Images are warped linearly, labels with the label-safe warp (no invented
values, integer dtype kept). Outputs keep the input's affine and header; each field is saved as a
NIfTI vector image; `manifest.json` records the checkpoint hash, seed, $T'$ and metrics. Files are
written atomically, existing outputs are never overwritten without `--overwrite`, and re-running an
interrupted command completes it.

Point `image` and `label` below at your files (empty: a phantom written to a temporary folder with
an anisotropic, non-identity affine, to show that the geometry survives).
""")
code(COLAB_CELL, tags=["remove-cell"])
code("""
profile = "ci"
seed = 0
device = "cpu"
checkpoint = "phantom2d"   # shipped model name, our checkpoint, or the release's .pth
image = ""                 # path to your NIfTI image (empty: a phantom)
label = ""                 # path to its label map (empty: the phantom labels, or none)
slicewise = "auto"         # "auto": slice by slice when a 3-D stack meets a 2-D network; or True / False
levels = [20, 40]          # T' values
n = 3                      # samples per level
work_dir = "runs/nb06"     # where outputs go (emptied first; runs/ is not tracked by git)
out_dir = "results"
""", tags=["parameters"])
code("""
import json, shutil, numpy as np, nibabel as nib, matplotlib.pyplot as plt
from pathlib import Path
from drdm import phantoms
from drdm.cli import main as drdm_cli
from drdm.data import save_nifti
from drdm.provenance import Timer, repo_root, save_results

timer = Timer()
work = Path(work_dir) if Path(work_dir).is_absolute() else repo_root() / work_dir
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)
if not image:
    img, lab = phantoms.cardiac_phantom(seed + 123, 96)
    affine = np.diag([1.4, 1.2, 8.0, 1.0]); affine[:3, 3] = [-60.0, -50.0, 12.0]   # mm, anisotropic
    image, label = str(work / "case.nii.gz"), str(work / "case_gt.nii.gz")
    save_nifti(image, img[..., None], affine, overwrite=True)
    save_nifti(label, lab[..., None], affine, label=True, overwrite=True)
print("input:", Path(image).name, nib.load(image).shape, "spacing (mm)",
      tuple(float(z) for z in nib.load(image).header.get_zooms()))
""")
md("The command line (the same as `drdm augment ...` in a shell):")
code("""
import os
args = ["augment", "--checkpoint", checkpoint, "--image", image, "--out", os.path.relpath(work / "aug"),
        "--levels", ",".join(map(str, levels)), "--n", str(n), "--seed", str(seed), "--device", device]
if label:
    args += ["--label", label]
if slicewise == "auto":
    from drdm.data import load_nifti
    from drdm import load
    stack = load_nifti(image)[0].ndim == 3          # (H, W, 1) files count as one 2-D slice
    slicewise = stack and load(checkpoint).config.ndim == 2
if slicewise:
    args += ["--slicewise"]
print("drdm " + " ".join(args[:1] + [a if not a.startswith("/") else Path(a).name for a in args[1:]]))
rc = drdm_cli(args)
if rc != 0:
    raise SystemExit(f"drdm augment failed with exit code {rc}")
manifest = json.loads((work / "aug" / "manifest.json").read_text())
print("exit code", rc, "|", len(manifest["outputs"]), "outputs")
""")
code("""
outs = manifest["outputs"]
src = nib.load(image)

def view(path):   # a 2-D view of a NIfTI file: the image itself, or the middle slice of a 3-D one
    a = np.squeeze(nib.load(path).get_fdata())
    return a[:, :, a.shape[2] // 2] if a.ndim == 3 else a

nlab = int(view(label).max()) if label else 3
fig, ax = plt.subplots(2, len(outs) + 1, figsize=(2.2 * (len(outs) + 1), 4.6))
ax[0, 0].imshow(view(image), cmap="gray"); ax[0, 0].set_title("input", fontsize=8)
if label:
    ax[1, 0].imshow(view(label), vmin=0, vmax=nlab)
for j, o in enumerate(outs, start=1):
    f = o["files"]
    ax[0, j].imshow(view(work / "aug" / f["image"]), cmap="gray")
    ax[0, j].set_title(f"T'={o['level']} #{o['index']}", fontsize=8)
    if "label" in f:
        ax[1, j].imshow(view(work / "aug" / f["label"]), vmin=0, vmax=nlab)
for a in ax.ravel():
    a.set_axis_off()
fig.suptitle("Fig. 6.1  DRDM augmentations of one NIfTI image (top) and its labels (bottom)"
             + (" (middle slice)" if src.ndim == 3 and src.shape[2] > 1 else ""), fontsize=9)
fig.tight_layout();
""", tags=["hide-input"], caption='Figure 6.1. DRDM augmentations of one NIfTI image (top) and its labels (bottom), label-safe warp.')
code("""
first = outs[0]["files"]
same_affine = all(np.allclose(nib.load(work / "aug" / o["files"]["image"]).affine, src.affine) for o in outs)
lab_in = set(np.unique(np.asarray(nib.load(label).dataobj)).tolist()) if label else set()
lab_ok = all(set(np.unique(np.asarray(nib.load(work / "aug" / o["files"]["label"]).dataobj)).tolist()) <= lab_in
             for o in outs) if label else None
ddf = nib.load(work / "aug" / first["ddf"])
print(f"affine kept: {same_affine}; label sets within the input's: {lab_ok}; "
      f"DDF shape {ddf.shape}, intent {ddf.header.get_intent()[0]}")
_ = save_results("06_your_data", {"outputs": len(outs), "affine_kept": same_affine, "labels_safe": lab_ok,
             "metrics": [o.get("metrics") for o in outs]}, profile=profile, seed=seed, device=device,
             wall_time_s=timer.elapsed, out_dir=out_dir)
""", tags=["nbval-check-output"])
md(r"""
**On real data.** For a 3-D volume with anisotropic spacing the command resamples to an isotropic
grid of the network's size for DRDM, then resamples the field back; the figure in the manifest's
metrics reports the field on both grids. A short-axis stack with a 2-D network goes slice by slice
(`--slicewise`): each slice gets its own field, the through-plane component of the saved field is
zero, and slices are never mixed. With the release's 2-D weights use
`--checkpoint 000000_cmr_recresacnet.pth` (from `data_scripts/get_official.py`).
""")
nb.write("notebooks/06_your_data.ipynb")
