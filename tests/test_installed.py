"""The package as a reader without a checkout has it (Colab's `pip install "drdm @ git+URL@REF"`):
built into a wheel from the package sources and results/, installed into an empty folder, and a chapter run
from another empty folder still shows the recorded results it reads (packaged copies of results/)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(site, env)``: drdm installed from a wheel of this working tree's package sources and
    results into ``site``, and an environment in which ``import drdm`` finds that copy only."""
    base = tmp_path_factory.mktemp("installed")
    src, site = base / "src", base / "site"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("drdm", "results"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel, = (base / "dist").glob("drdm-*.whl")
    r = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(site), "DRDM_SHARED": "none", "OMP_NUM_THREADS": "1"}
    return site, env


def test_installed_package_finds_recorded_results(installed, tmp_path):
    site, env = installed
    code = ("import drdm; from drdm.book import load_recorded; "
            "print(drdm.__file__); print(drdm.results_dir()); "
            "print(load_recorded('table1_acdc') is not None, load_recorded('registration_thorax3d') is not None)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    where, results, recorded = r.stdout.splitlines()[-3:]
    assert Path(where).is_relative_to(site), f"drdm imported from {where}, not the installed copy"
    assert Path(results) == site / "drdm" / "_results"
    assert recorded == "True True"
    for rel in ("phantom_model/log.csv", "bench/sampling.json", "cpu/table1_acdc.json"):
        assert (site / "drdm" / "_results" / rel).read_bytes() == (ROOT / "results" / rel).read_bytes()


def test_chapter_runs_outside_the_repository(installed, tmp_path):
    """Chapter 7 (ci profile) from an empty folder: it reads results/bench through the package."""
    site, env = installed
    from drdm.bookrun import load_params

    work = tmp_path / "empty"
    work.mkdir()
    src = ROOT / "notebooks" / "07_benchmarks.ipynb"
    params = load_params("ci", ROOT)["07_benchmarks"]
    r = subprocess.run([sys.executable, "-m", "papermill", str(src), str(tmp_path / "out.ipynb"), "-k", "python3",
                        "--cwd", str(work), "--no-progress-bar", "-y", json.dumps(params)],
                       cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    shown = "\n".join("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/markdown", ""))
                      for c in nb["cells"] if c["cell_type"] == "code" for out in c.get("outputs", []))
    listed = next((ln for ln in shown.splitlines() if ln.startswith("benchmark files:")), "")
    assert all(f"'{name}'" in listed for name in ("forward_fields", "sampling", "training")), shown[:2000]
    for table in ("Table 7.1", "Table 7.2", "Table 7.3"):
        assert table in shown, f"{table} missing: the recorded benchmarks were not found"
    assert "not found" not in shown
