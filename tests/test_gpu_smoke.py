"""The gpu profile's code paths on the CPU: notebooks 02 and 03 with gpu.yaml and the gpu-smoke
overlay (notebooks/params/gpu-smoke.yaml: device cpu, a step or two and a sliver of data), so a
typo or a size-dependent failure in the gpu profile shows in CI, not on a rented GPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

from drdm.bookrun import load_params

ROOT = Path(__file__).resolve().parents[1]
SHRUNK = {"02_training": {"steps", "n_subjects", "batch"},
          "03_sampling": {"n_images", "official_images", "explorer_levels"}}


def test_overlay_keeps_the_gpu_profile_but_steps_and_data():
    gpu, smoke = load_params("gpu", ROOT), load_params("gpu", ROOT, ["gpu-smoke"])
    for stem, shrunk in SHRUNK.items():
        changed = {k for k in gpu[stem] if smoke[stem][k] != gpu[stem][k]}
        assert changed == shrunk | {"device", "profile"}, (stem, changed)
        assert smoke[stem]["device"] == "cpu" and smoke[stem]["profile"] == "gpu-smoke"
    assert smoke["02_training"]["image_size"] == gpu["02_training"]["image_size"] == 256
    check = load_params("gpu", ROOT, ["gpu-check"])
    assert {k for k in gpu["02_training"] if check["02_training"][k] != gpu["02_training"][k]} == {"steps"}
    assert check["03_sampling"] == gpu["03_sampling"] and check["02_training"]["device"] == "cuda"


def test_gpu_profile_notebooks_run_on_cpu_with_the_smoke_overlay(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DRDM_SHARED": "none"}
    r = subprocess.run([sys.executable, "-m", "drdm.bookrun", "--profile", "gpu", "--overlay", "gpu-smoke",
                        "--only", "02_", "--only", "03_", "--out", str(tmp_path / "executed"),
                        "--results", str(tmp_path / "results")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert sorted(p.name for p in (tmp_path / "executed").iterdir()) == ["02_training.ipynb", "03_sampling.ipynb"]
    rec = json.loads((tmp_path / "results" / "gpu-smoke" / "02_training.json").read_text())
    cfg = rec["numbers"]["config"]
    assert (cfg["image_size"], cfg["steps"], cfg["batch"], cfg["device"]) == (256, 1, 2, "cpu")
    assert cfg["lr"] == load_params("gpu", ROOT)["02_training"]["lr"]
    assert (tmp_path / "results" / "gpu-smoke" / "03_sampling.json").is_file()
