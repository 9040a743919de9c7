"""Writes notebooks/00_data.ipynb; then store ci outputs with
    papermill -k python3 notebooks/00_data.ipynb notebooks/00_data.ipynb --cwd .
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nbtools import COLAB_CELL, Notebook  # noqa: E402

nb = Notebook()
md, code = nb.md, nb.code

md(r"""
# 0. The data: embedded phantoms beside real scans

The book must run anywhere without a download, so `drdm.phantoms` draws procedural data:
2-D cardiac short-axis slices with ACDC labels (0 background, 1 RV, 2 myocardium, 3 LV) and 3-D
thorax volumes with lung masks. Each seed is a subject; sizes, wall thickness, RV shape and angle,
position and rotation vary between subjects, and `phase="ES"` contracts the same heart.
Below they stand beside real M&Ms slices (when the development subset is present) so you can judge
how far they are from real data. Real datasets load through `drdm.data` (ACDC, its h5 form, M&Ms,
Learn2Reg lung CT, any NIfTI folder); `data_scripts/` fetches them where that is allowed.
""")
code(COLAB_CELL, tags=["remove-cell"])
code("""
profile = "ci"
seed = 0
device = "cpu"
size = 128              # phantom side (pixels)
n_show = 4              # subjects per row
out_dir = "results"
""", tags=["parameters"])
code("""
import numpy as np, torch, matplotlib.pyplot as plt
from drdm import phantoms, data, shared
from drdm.provenance import Timer, save_results

timer = Timer()
mnms_root = shared.mnms_dir()    # None without the shared data (or with DRDM_SHARED=none)
real = []
if mnms_root is not None:
    recs = [r for r in data.load_mnms(mnms_root) if r.phase == "ED"][:n_show]
    for r in recs:
        k = int(np.argmax((r.label == 3).sum(axis=(0, 1))))          # the slice with most LV
        real.append((data.preprocess(r.image[..., k], size), data.preprocess_label(r.label[..., k], size), r.subject))
print(f"M&Ms development subset: {'found, ' + str(len(real)) + ' subjects shown' if real else 'not present'}")
""")
code("""
rows = 3 if real else 2
fig, ax = plt.subplots(rows, n_show, figsize=(2.4 * n_show, 2.5 * rows))
for j in range(n_show):
    ed, lab = phantoms.cardiac_phantom(seed + j, size, "ED")
    es, _ = phantoms.cardiac_phantom(seed + j, size, "ES")
    ax[0, j].imshow(ed, cmap="gray"); ax[0, j].contour(lab, levels=[0.5, 1.5, 2.5], linewidths=0.6, colors=["C0", "C1", "C2"])
    ax[0, j].set_title(f"phantom {seed + j}, ED", fontsize=8)
    ax[1, j].imshow(es, cmap="gray"); ax[1, j].set_title("same subject, ES", fontsize=8)
    if real:
        im, lb, sid = real[j]
        ax[2, j].imshow(im, cmap="gray"); ax[2, j].contour(lb, levels=[0.5, 1.5, 2.5], linewidths=0.6, colors=["C0", "C1", "C2"])
        ax[2, j].set_title(f"M&Ms {sid}, ED", fontsize=8)
for a in ax.ravel():
    a.set_axis_off()
fig.suptitle("Fig. 0.1  Cardiac phantoms (rows 1-2) and real M&Ms slices (row 3, when present); "
             "contours: RV, myocardium, LV", fontsize=9)
fig.tight_layout();
""", tags=["hide-input"], caption='Figure 0.1. Cardiac phantoms from drdm.phantoms (rows 1-2: ED and ES, labels overlaid) and, when ../shared is present, real M&Ms slices (row 3).')
code("""
vol, lungs = phantoms.thorax_phantom(seed, 64)
fig, ax = plt.subplots(1, 3, figsize=(8, 2.8))
for a, (img, m, name) in zip(ax, [(vol[32], lungs[32], "axial"), (vol[:, 30], lungs[:, 30], "coronal"),
                                  (vol[:, :, 20], lungs[:, :, 20], "sagittal")]):
    a.imshow(img, cmap="gray"); a.contour(m > 0, levels=[0.5], colors="C3", linewidths=0.6)
    a.set_title(name, fontsize=8); a.set_axis_off()
fig.suptitle("Fig. 0.2  A 3-D thorax phantom (64³) with its lung mask", fontsize=9); fig.tight_layout();
""", tags=["hide-input"], caption='Figure 0.2. A 3-D thorax phantom with its lung mask, three orthogonal slices.')
code("""
imgs, labs, subj = phantoms.cardiac_dataset(20, size, seed=seed)
present = [sorted(torch.unique(l).tolist()) for l in labs]
stats = {"subjects": 20, "all_four_labels": all(p == [0, 1, 2, 3] for p in present),
         "lv_area_px_mean": float((labs == 3).sum((1, 2, 3)).float().mean()),
         "myo_area_px_mean": float((labs == 2).sum((1, 2, 3)).float().mean())}
print(stats)    # checked by nbval: the same with or without the shared data
_ = save_results("00_data", {**stats, "mnms_subjects_shown": len(real)}, profile=profile, seed=seed, device=device, wall_time_s=timer.elapsed, out_dir=out_dir)
""", tags=["nbval-check-output"])
nb.write("notebooks/00_data.ipynb")
