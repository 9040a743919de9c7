"""Writes notebooks/07_benchmarks.ipynb (reads results/bench/*.json; it measures nothing itself)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nbtools import COLAB_CELL, Notebook  # noqa: E402

nb = Notebook()
md, code = nb.md, nb.code
md(r"""
# 7. Speed and memory, against peers measured in the same run

`make bench` runs three scripts in `benchmarks/` and writes `results/bench/*.json`; this chapter only
reads and plots them. Every speed claim is a ratio against a peer timed in the same run on the same
machine (absolute numbers depend on the machine; the file records it).

* `forward_fields.py`: draw a random DDF and warp one image, one CPU thread, against MONAI
  `Rand2DElastic` (256²) and `Rand3DElastic` (128³); scaling with image size and with $t$.
* `sampling.py`: Algorithm 2 samples/s against a re-implementation of the release's loop (one
  sample at a time, image and soft labels re-warped bicubically every step) at equal recovery steps.
* `training.py`: training images/s and peak memory, 2-D 128² and 3-D 64³.
""")
code(COLAB_CELL, tags=["remove-cell"])
code("""
profile = "ci"
seed = 0
device = "cpu"
out_dir = "results"
""", tags=["parameters"])
code("""
import json, matplotlib.pyplot as plt
from IPython.display import Markdown, display
from drdm.provenance import repo_root
bench = {p.stem: json.loads(p.read_text()) for p in sorted((repo_root() / "results" / "bench").glob("*.json"))}
print("benchmark files:", sorted(bench))
""")
code("""
ff = bench.get("forward_fields")
if ff:
    lines = ["| case | size | batch | fields/s | × MONAI |", "|---|---|---|---|---|"]
    for r in ff["rows"]:
        ratio = r.get("ratio_vs_monai")
        lines.append(f"| {r['case']} | {r['size']} | {r['batch']} | {r['fields_per_s'] or 0:.2f} | "
                     f"{'' if ratio is None else f'{ratio:.2f}'} |")
    display(Markdown(f"**Table 7.1  Random field + warp, one thread ({ff.get('machine')}, commit {ff.get('commit')})**\\n\\n"
                     + "\\n".join(lines)))
    sc = ff.get("scaling") or []
    if sc:
        fig, ax = plt.subplots(1, 2, figsize=(9, 3))
        for nd in (2, 3):
            pts = [r for r in sc if r["ndim"] == nd and r["t"] == 79]
            ax[0].plot([r["size"] for r in pts], [r["fields_per_s"] for r in pts], "o-", label=f"{nd}-D")
        ax[0].set_xscale("log", base=2); ax[0].set_yscale("log"); ax[0].set_xlabel("image side")
        ax[0].set_ylabel("fields/s"); ax[0].legend(fontsize=8)
        pts = [r for r in sc if r["ndim"] == 2 and r["size"] == 256]
        ax[1].plot([r["t"] for r in pts], [r["fields_per_s"] for r in pts], "o-")
        ax[1].set_xlabel("t"); ax[1].set_ylabel("fields/s (2-D 256²)")
        fig.suptitle("Fig. 7.1  Cost of the official forward process with image size (left) and t (right)", fontsize=10)
        fig.tight_layout()
else:
    print("results/bench/forward_fields.json not found: run make bench")
""", tags=["hide-input"])
code("""
sp = bench.get("sampling")
if sp:
    lines = ["| T' | steps | batch | drdm samples/s | official-style samples/s | ratio |", "|---|---|---|---|---|---|"]
    for r in sp["rows"]:
        base = [x for x in sp["rows"] if x["level"] == r["level"] and x["batch"] == 1][0]["official_style_samples_per_s"]
        lines.append(f"| {r['level']} | {r['steps']} | {r['batch']} | {r['drdm_samples_per_s']:.3f} | {base:.3f} | "
                     f"{r.get('ratio_vs_official_style') or 0:.2f} |")
    display(Markdown(f"**Table 7.2  Sampling, {sp['threads']} threads, {sp['device']}: {sp.get('target_5x')}**\\n\\n"
                     + "\\n".join(lines)))
tr = bench.get("training")
if tr:
    lines = ["| case | batch | images/s | peak memory (MiB) |", "|---|---|---|---|"]
    for r in tr["rows"]:
        lines.append(f"| {r['ndim']}-D {r['size']} | {r['batch']} | {r['images_per_s']:.2f} | {r['peak_mib']:.0f} ({r['memory']}) |")
    display(Markdown(f"**Table 7.3  Training throughput ({tr['rows'][0]['device']})**\\n\\n" + "\\n".join(lines)))
""", tags=["hide-input"])
md(r"""
Where a target is missed, the tables say so and by how much; the issue tracker keeps the targets.
""")
nb.write("notebooks/07_benchmarks.ipynb")
