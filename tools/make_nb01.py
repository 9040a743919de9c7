"""Writes notebooks/01_noise_statistics.ipynb (source of truth for its cells).

After running it, store the ci-profile outputs that nbval compares against:
    papermill -k python3 notebooks/01_noise_statistics.ipynb notebooks/01_noise_statistics.ipynb --cwd .
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nbtools import COLAB_CELL, Notebook  # noqa: E402

nb = Notebook()
md, code = nb.md, nb.code

md(r"""
# 1. Noise statistics of the forward process

DRDM diffuses **deformations**, not intensities. At every step $t$ it draws a random
*deformation velocity field* (DVF) that is smooth across several spatial scales, and
integrates the DVFs into a dense displacement field (DDF) $\phi_{t:1}$ by composition
(Eq. 5). This chapter checks the variance formulas of Section 2.1 (Eqs. 6-11) against
sampled fields, for the paper's reading and for what the official release does.

```{admonition} Running this notebook
:class: dropdown
Defaults are the fast `ci` profile. `make results PROFILE=cpu` (or `gpu`) re-runs it
with the parameters in `notebooks/params/`. Numbers go to `results/<profile>/01_noise_statistics.json`.
```
""")
code(COLAB_CELL, tags=["remove-cell"])
code("""
profile = "ci"          # ci | cpu | gpu: which parameter set this run uses
seed = 0                # one generator seeds every draw below
device = "cpu"
image_size = 32         # paper reading: image side (field is 2x larger before cropping)
n_fields = 200          # paper reading: samples per statistic
official_size = 64      # official reading: image side S (the release uses 256)
official_fields = 32    # official reading: samples per t
out_dir = "results"
""", tags=["parameters"])
code("""
import json, torch, matplotlib.pyplot as plt
import drdm
from drdm import spatial, viz
from drdm.diffusion import (DiffusionConfig, ForwardProcess, n_t, n_t1,
                            dvf_variance, discontinuity_variance, ddf_variance)
import os
from drdm.provenance import Timer, repo_root, save_results

timer = Timer()
gen = torch.Generator(device).manual_seed(seed)
results = {}
""")
md(r"""
## Multi-scale DVFs (Eq. 6)

A DVF is a sum of $m+1$ i.i.d. Gaussian fields: scale $i$ lives on a grid $2^i$ times
coarser with standard deviation $2^i\sigma$, and is interpolated to the field resolution.
Coarse scales carry most of the variance and make the field smooth; the finest scale
adds local roughness. Here the nodes of scale $i$ sit exactly on voxels $0, 2^i, 2\cdot 2^i, \dots$
and are linearly interpolated in between.
""")
code("""
fp = ForwardProcess(DiffusionConfig(reading="paper", image_size=image_size))
cfg = fp.config
print(f"paper reading: sigma = {cfg.sigma} voxel, m = {cfg.m}, field {2 * image_size}^2 cropped to {image_size}^2")
v = fp.multiscale_dvf(n_fields, cfg.sigma, gen, dtype=torch.float64)
step = 2 ** cfg.m
node_var = v[:, :, ::step, ::step].var().item()
results["eq7_single_dvf"] = {"sampled": node_var, "theory": dvf_variance(cfg.sigma, cfg.m).item()}
dxs = [1, 2, 4, 8, 16]
disc = []
for dx in dxs:
    a = v[:, 0, 0:-dx:step, ::step]; b = v[:, 0, dx::step, ::step][:, :a.shape[1]]
    disc.append((b - a[:, :b.shape[1]]).var().item())
results["eq8_single_dvf"] = {"dx": dxs, "sampled": disc,
                             "theory": [discontinuity_variance(cfg.sigma, cfg.m, d).item() for d in dxs]}
""")
code("""
print(f"Eq. 7 per-voxel variance: sampled {node_var:.3e}, theory {results['eq7_single_dvf']['theory']:.3e}")
for d, s, th in zip(dxs, disc, results["eq8_single_dvf"]["theory"]):
    print(f"Eq. 8 |dx|={d:2d}: sampled {s:.3e}  theory {th:.3e}  ratio {s / th:.3f}")
""", tags=["nbval-check-output"])
code("""
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
im = axes[0].imshow(v[0, 0].cpu(), cmap="RdBu"); axes[0].set_title("one DVF, component 0 (voxels)", fontsize=9)
axes[0].set_axis_off(); fig.colorbar(im, ax=axes[0], shrink=0.8)
viz.plot_grid(axes[1], (v[:1] * 20).float(), step=4); axes[1].set_title("its grid, displacement x20", fontsize=9)
axes[2].plot(dxs, results["eq8_single_dvf"]["theory"], "k-", label="Eq. 8")
axes[2].plot(dxs, disc, "o", label="sampled (node lattice)")
axes[2].set_xscale("log", base=2); axes[2].set_xlabel("|dx| (voxels)"); axes[2].set_ylabel("variance (voxel²)")
axes[2].legend(fontsize=8); fig.tight_layout()
fig.suptitle("Fig. 1.1  A multi-scale DVF and its discontinuity variance against Eq. 8", y=1.03, fontsize=10);
""", tags=["hide-input"], caption='Figure 1.1. One multi-scale random DVF (Eq. 6, paper reading) and its discontinuity variance against Eq. 8.')
md(r"""
Eq. 8 is exact for power-of-two offsets measured from a node of the coarsest scale; at
other offsets, and at voxels between nodes, linear interpolation gives somewhat less
variance (between nodes, $(1-w)^2 + w^2 \le 1$ of the node variance).

## Integrated fields (Eqs. 7, 10 and 11)

$\psi_t$ composes $n_t = \lfloor t^{0.6} \rfloor$ DVFs and $\phi_{t:1}$ composes
$n_{t:1} = \lfloor t^{1.3}/1.5 \rfloor$ of them (the paper's practical schedule; Eq. 11
would give $\lfloor t^{1.6}/1.6 \rfloor$). For small displacements composition adds
variances, giving Eqs. 7 and 10. Composition reads each DVF at $x + \phi(x)$, off its node
lattice, so the sampled variance falls below the formulas as fields grow.
""")
code("""
ts = [5, 10, 20, 40]
rows = []
for t in ts:
    s = fp.sample(torch.full((n_fields // 4,), t), gen, dtype=torch.float64)
    off = (-(image_size // 2)) % step
    lat = lambda f: f[:, :, off::step, off::step].var().item()
    n_phi, n_psi = int(s.n_phi[0]), int(s.n_psi[0])
    rows.append({"t": t, "n_t": n_psi, "n_t1": n_phi,
                 "psi_var": lat(s.psi), "eq7": dvf_variance(cfg.sigma, cfg.m, n_psi).item(),
                 "phi_var": lat(s.phi), "eq10": ddf_variance(cfg.sigma, cfg.m, n_phi).item() * (1 + cfg.perturbation ** 2),
                 "phi_negJ_pct": 100 * spatial.negative_jacobian_fraction(s.phi).mean().item()})
results["paper_integrated"] = rows
for r in rows:
    print(f"t={r['t']:2d} n_t={r['n_t']:2d} n_t1={r['n_t1']:3d}  psi/Eq.7 = {r['psi_var'] / r['eq7']:.2f}"
          f"  phi/Eq.10 = {r['phi_var'] / r['eq10']:.2f}  |J|<0 = {r['phi_negJ_pct']:.2f} %")
""")
code("""
fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
tt = torch.arange(0, 81)
ax[0].plot(tt, n_t(tt), label=r"$n_t=\\lfloor t^{0.6}\\rfloor$")
ax[0].plot(tt, n_t1(tt), label=r"$n_{t:1}$ practical $\\lfloor t^{1.3}/1.5\\rfloor$")
ax[0].plot(tt, n_t1(tt, schedule="theory"), "--", label=r"$n_{t:1}$ Eq. 11")
ax[0].set_xlabel("t"); ax[0].set_ylabel("compositions"); ax[0].legend(fontsize=8)
ax[1].plot(ts, [r["psi_var"] / r["eq7"] for r in rows], "o-", label=r"$\\psi_t$ / Eq. 7")
ax[1].plot(ts, [r["phi_var"] / r["eq10"] for r in rows], "s-", label=r"$\\phi_{t:1}$ / Eq. 10")
ax[1].axhline(1, color="k", lw=0.5); ax[1].set_ylim(0, 1.2); ax[1].set_xlabel("t"); ax[1].legend(fontsize=8)
ax[1].set_ylabel("sampled / theory")
fig.suptitle("Fig. 1.2  Schedules (left) and integrated variance against Eqs. 7 and 10 (right)", fontsize=10)
fig.tight_layout();
""", tags=["hide-input"], caption='Figure 1.2. Step schedules (left) and the sampled variance of the step and integrated fields against Eqs. 7 and 10 (right), paper reading.')
md(r"""
## What the official release does

The release draws **one** stationary velocity $v$ per sample on a 64-cell control grid
spanning twice the image, self-composes it $n_{t:1}$ times for $\phi_{t:1}$ (with an 8 %
composed perturbation) and $n_t$ times for $\psi_t$, then multiplies by $S/64$. Magnitude
therefore grows about linearly in $n$ (variance $\propto n^2$, not $n$), and for 2-D images
at $S=256$ the factor $S/64 = 4$ is twice the geometric factor 2, so 2-D random fields are
twice as large as the integrated flow and fold heavily at large $t$. Below: magnitude and
folding against $t$, beside the release's own statistics at $S = 256$ when available.
""")
code("""
from drdm.shared import official_dir    # None without the shared data (or with DRDM_SHARED=none)
ref_path = official_dir() / "forward_stats.json" if official_dir() is not None else None
ref = json.loads(ref_path.read_text())["stats_by_t"] if ref_path is not None and ref_path.exists() else None
t_off = [0, 10, 20, 30, 40, 50, 60, 70, 79]
official = {}
for unit in ("official", "geometric"):
    fo = ForwardProcess(DiffusionConfig(reading="official", image_size=official_size, unit_factor=unit))
    rows = []
    for t in t_off:
        s = fo.sample(torch.full((official_fields,), t), gen)
        m = spatial.magnitude_stats(s.phi.double())
        rows.append({"t": t, "mean_pct": m["mean_pct"].mean().item(), "max_pct": m["max_pct"].mean().item(),
                     "negJ_pct": 100 * spatial.negative_jacobian_fraction(s.phi.double()).mean().item(),
                     "target_mean_pct": spatial.magnitude_stats(s.psi.double())["mean_pct"].mean().item()})
    official[unit] = rows
results["official_reading"] = official
print(f"reference statistics found: {ref is not None}")
""")
code("""
fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
for unit, style in (("official", "-o"), ("geometric", "--s")):
    r = official[unit]
    ax[0].plot(t_off, [x["mean_pct"] for x in r], style, label=f"mean |phi|, {unit} factor")
    ax[1].plot(t_off, [x["negJ_pct"] for x in r], style, label=f"{unit} factor")
if ref is not None:
    ax[0].plot(t_off, [ref[str(t)]["phi"]["mean_mag_pct"]["mean"] for t in t_off], "k^", label="release, S=256")
    ax[1].plot(t_off, [ref[str(t)]["phi"]["negJ_pct"]["mean"] for t in t_off], "k^", label="release, S=256")
ax[0].set_xlabel("t"); ax[0].set_ylabel("% of image side"); ax[0].legend(fontsize=7)
ax[1].set_xlabel("t"); ax[1].set_ylabel("|J|<0 (%)"); ax[1].legend(fontsize=7)
fig.suptitle(f"Fig. 1.3  Official reading at S={official_size}: magnitude and folding of phi_(t:1)", fontsize=10)
fig.tight_layout();
""", tags=["hide-input"], caption="Figure 1.3. Official reading: magnitude and folding of the integrated field against the statistics of the release's own sampler.")
md(r"""
With the official factor, $S/64$ depends on the image size: at $S = 64$ it is 1 (half the
geometric 2), at $S = 256$ it is 4 (double). Magnitudes in % of the side therefore change
with $S$ under the release's convention; with the geometric factor they do not.

## The enlarged field

Composition reads the accumulated field at $x + v(x)$; near the border those reads fall
outside the field. With zero padding the outside contributes nothing, a "friction" that
stops displacements from growing at the edges. The paper generates the field on a grid twice
the image size and crops the centre. Compare the magnitude profile across the image with
and without the enlargement (paper reading, zero padding):
""")
code("""
prof = {}
for factor in (1, 2):
    fe = ForwardProcess(DiffusionConfig(reading="paper", image_size=image_size, field_factor=factor,
                                        n_scales=cfg.n_scales))
    s = fe.sample(torch.full((n_fields // 4,), 40), gen)
    prof[factor] = s.phi.norm(dim=1).mean(dim=(0, 2))      # mean |phi| per column (voxels)
edge = {f: (p[:2].mean() / p[image_size // 2 - 2: image_size // 2 + 2].mean()).item() for f, p in prof.items()}
results["enlarged_field_edge_ratio"] = edge
fig, ax = plt.subplots(figsize=(5, 3))
for f, p in prof.items():
    ax.plot(p.cpu(), label=f"h = {f}H (edge/centre = {edge[f]:.2f})")
ax.set_xlabel("column (voxel)"); ax.set_ylabel("mean |phi| (voxels)"); ax.legend(fontsize=8)
ax.set_title("Fig. 1.4  Border friction without the enlarged field (t = 40)", fontsize=10);
""", tags=["hide-input"], caption='Figure 1.4. Displacement near the border with and without the enlarged field, t = 40.')
md(r"""
## Deforming an image

A checkerboard deformed by $\phi_{t:1}$ at increasing $t$ (official reading), with the
Jacobian determinant: red areas fold ($\det < 0$).
""")
code("""
fo = ForwardProcess(DiffusionConfig(reading="official", image_size=official_size))
img = viz.checkerboard((official_size, official_size), square=official_size // 8)
show_t = [10, 30, 50, 79]
g2 = torch.Generator().manual_seed(seed)
fig, ax = plt.subplots(2, len(show_t), figsize=(2.4 * len(show_t), 5))
for j, t in enumerate(show_t):
    g2.manual_seed(seed)                      # the same velocity at every t
    phi = fo.sample(t, g2).phi
    viz.show_image(ax[0, j], spatial.warp(img, phi), f"t = {t}")
    viz.plot_jacobian(ax[1, j], phi)
fig.suptitle("Fig. 1.5  One velocity field integrated to increasing t (top) and its Jacobian (bottom)", fontsize=10)
fig.tight_layout();
""", tags=["hide-input"], caption='Figure 1.5. One velocity field integrated to increasing t (top) and its Jacobian determinant (bottom; folding where negative).')
code("""
path = save_results("01_noise_statistics", results, profile=profile, seed=seed, device=device,
                    wall_time_s=timer.elapsed, out_dir=out_dir)
print("wrote", os.path.relpath(path, repo_root()))
""")
md(r"""
## Summary

* A single multi-scale DVF follows Eqs. 7 and 8 exactly on the node lattice of its coarsest scale.
* Composed fields follow Eqs. 7 and 10 for small displacements and fall below them as the
  displacement becomes comparable to the node spacing.
* The release integrates one stationary field instead of independent steps and scales 2-D fields
  by $S/64$; the book's `official` reading reproduces its statistics (tested against the release's
  own numbers at $S = 256$).

**Exercises.** (1) Set `field_factor=1` with `padding="border"`: is there still friction?
(2) How does `n_scales` change the folding of $\phi_{t:1}$ at $t = 40$?
""")

nb.write("notebooks/01_noise_statistics.ipynb")
