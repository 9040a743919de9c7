"""Writes notebooks/02_training.ipynb; then store ci outputs with
    papermill -k python3 notebooks/02_training.ipynb notebooks/02_training.ipynb --cwd .
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nbtools import COLAB_CELL, Notebook  # noqa: E402

nb = Notebook()
md, code = nb.md, nb.code

md(r"""
# 2. Training the recovery network (Algorithm 1)

At every step, Algorithm 1 draws images $I_0$, time steps $t \sim \mathcal{U}\{0..T-1\}$ and a
forward pair: the random field $\phi_{t:1}$ that deforms $I_0$ into $I_t$, and the last step's
velocity $\psi_t$. The network $D_\theta(I_t, t)$ predicts $\hat\psi_t \approx \psi_t^{-1}$ with
$K = 2$ internal recursions (Eq. 12), and Eq. 14 scores how well $\hat\psi_t$ undoes $\psi_t$:

$$\mathcal{L} = \lambda_1 \frac{\lVert \langle\psi_t \circ \hat\psi_t\rangle \rVert^2}{\lVert\psi_t\rVert^2+\epsilon}
 + \lambda_2 \left(1 + \cos\angle\big(\hat\psi_t(x+\psi_t(x)),\, \psi_t(x)\big)\right)
 + \lambda_3 \left(\lVert\nabla\hat\psi_t\rVert_1 + \mathrm{relu}(-\det(I+\nabla\hat\psi_t))\right)$$

with $\lambda = (1, 1, 10)$. The distance term is the release's squared ratio; the angle term is
minimised at anti-parallel vectors (the paper's minus sign is a typo); the folding term is our
corrected one (the release's is inert, see the reproducibility chapter).

```{admonition} Running this notebook
:class: dropdown
The `ci` profile trains a tiny model for a few dozen steps (a smoke test with a visible loss drop);
`cpu` trains for minutes; `gpu` at paper scale (256², batch 64). Checkpoints are written atomically
and a run resumes from its `last.pth`; on several GPUs launch `drdm train` with `torchrun`.
```
""")
code(COLAB_CELL, tags=["remove-cell"])
code("""
profile = "ci"          # ci | cpu | gpu
seed = 0
device = "cpu"          # "auto" picks cuda, then mps, then cpu
image_size = 32         # phantom side (pixels); the paper uses 256
steps = 30              # training steps
batch = 4
lr = 1e-3               # the paper's 1e-4 needs far more steps than a book chapter has
n_subjects = 16         # phantom subjects (ED and ES of each)
run_dir = ""            # empty: a fresh temporary folder (no resume)
out_dir = "results"
""", tags=["parameters"])
code("""
import csv, tempfile, torch, matplotlib.pyplot as plt
from drdm import spatial, viz
from drdm.training import TrainConfig, Trainer
import os
from drdm.provenance import Timer, repo_root, save_results

timer = Timer()
torch.manual_seed(seed)
cfg = TrainConfig(image_size=image_size, steps=steps, batch=batch, lr=lr, n_subjects=n_subjects,
                  seed=seed, device=device, unit_factor=4.0, log_every=max(1, steps // 30),
                  checkpoint_every=steps)
trainer = Trainer(cfg, run_dir or tempfile.mkdtemp(prefix="drdm_nb02_"), progress=False)
print(f"{trainer.images.shape[0]} training images {tuple(trainer.images.shape[2:])}, "
      f"network {trainer.model.n_parameters:,} values, device {trainer.device}")
""")
md(r"""
## One training pair

`unit_factor=4` scales the release's 64-cell control-grid field as the release does for 2-D images
at $S=256$, so fields have the same size in % of the image side (and the same folding) at any $S$.
""")
code("""
g = torch.Generator().manual_seed(seed)
x0 = trainer.images[:1]
s = trainer.fp.sample(torch.tensor([40]), g)
xt = spatial.warp(x0, s.phi)
fig, ax = plt.subplots(1, 4, figsize=(10, 2.8))
viz.show_image(ax[0], x0, "$I_0$")
viz.show_image(ax[1], xt, "$I_t = \\\\phi_{t:1}(I_0)$, t = 40")
viz.plot_grid(ax[2], s.phi, step=max(2, image_size // 16)); ax[2].set_title("$\\\\phi_{t:1}$", fontsize=9)
viz.plot_grid(ax[3], s.psi * 5, step=max(2, image_size // 16)); ax[3].set_title("target $\\\\psi_t$ (x5)", fontsize=9)
fig.suptitle("Fig. 2.1  A training pair", fontsize=10); fig.tight_layout();
""", tags=["hide-input"], caption='Figure 2.1. A training pair of Algorithm 1 on phantom data: the image, its deformed version and the random step the network learns to undo.')
md("## Training")
code("""
rows = trainer.run()
first, last = rows[0], rows[-1]
print(f"steps {last['step']}: loss {first['loss']:.3f} -> {last['loss']:.3f}, "
      f"{last['images_per_s']:.1f} images/s")
""")
code("""
fig, ax = plt.subplots(1, 3, figsize=(11, 3))
st = [r["step"] for r in rows]
for a, key in zip(ax, ("dist", "angle", "reg")):
    a.plot(st, [r[key] for r in rows]); a.set_title(key, fontsize=9); a.set_xlabel("step")
ax[0].set_yscale("log")
fig.suptitle(f"Fig. 2.2  Loss terms during this run ({profile} profile)", fontsize=10); fig.tight_layout();
""", tags=["hide-input"], caption="Figure 2.2. The loss terms of Eq. 14 during this notebook's short run (profile named in the title).")
md(r"""
## The shipped model

The package ships a small model trained on the phantoms (`drdm.load_pretrained("phantom2d")`).
Its command, configuration and log are in `results/phantom_model/`; the curve below reads that log.
""")
code("""
from drdm.provenance import results_dir   # the checkout's results/, or the installed copy
log_path = results_dir() / "phantom_model" / "log.csv"
shipped = list(csv.DictReader(open(log_path))) if log_path.exists() else []
if shipped:
    fig, ax = plt.subplots(figsize=(6, 3))
    st = [int(r["step"]) for r in shipped]
    for key in ("loss", "dist", "angle"):
        ax.plot(st, [float(r[key]) for r in shipped], label=key, lw=0.8)
    ax.set_yscale("log"); ax.set_xlabel("step"); ax.legend(fontsize=8)
    ax.set_title("Fig. 2.3  Training log of the shipped phantom model", fontsize=10)
print(f"shipped model log: {len(shipped)} rows")
""", tags=["hide-input"], caption='Figure 2.3. Training log of the shipped phantom model (results/phantom_model).')
code("""
results = {"config": cfg.to_dict(), "first": first, "last": last}   # timings go to provenance
path = save_results("02_training", results, profile=profile, seed=seed, device=str(trainer.device),
                    wall_time_s=timer.elapsed, out_dir=out_dir)
print("wrote", os.path.relpath(path, repo_root()))
""")
md(r"""
## Summary

Training is Algorithm 1 as written, with the release's forward process and loss coding apart from
the folding term. The tiny `ci` run only shows the mechanics; the shipped model and the `gpu`
profile are what the next chapters use.

**Exercises.** (1) Train with `loss_coding="official"` and compare the folding of recovered fields in
chapter 3. (2) Set `recursion=1`: how much worse is the distance term?
""")
nb.write("notebooks/02_training.ipynb")
