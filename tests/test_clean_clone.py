"""`make book` leaves a clone clean: the numbers its live chapters produce go to a build folder,
and the committed results/ change only through an explicit command (issue: make book's budget)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _make_book_recipe() -> list[str]:
    """The commands of the Makefile's ``book`` target (checked here so the test runs what it runs)."""
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\nbook:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    return [line.strip() for line in recipe if line.startswith("\t") and not line.strip().startswith("@")]


def test_the_book_target_writes_numbers_to_the_build_folder():
    recipe = _make_book_recipe()
    assert any("drdm.bookrun" in r and "--results $(BOOK_RESULTS)" in r for r in recipe), recipe
    assert "BOOK_RESULTS ?= _build/results" in (ROOT / "Makefile").read_text()


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_a_ci_book_build_leaves_a_fresh_clone_clean(ci_book_runs):
    """`make book`'s two commands in a fresh clone (the first, drdm.bookrun, ran in the shared fixture)."""
    clone = ci_book_runs["clone"]
    env = {k: v for k, v in os.environ.items() if k != "DRDM_OUTPUT_ROOT"}    # as `make book` runs
    env["OMP_NUM_THREADS"] = "2"
    jb = str(Path(sys.executable).with_name("jupyter-book"))
    r = subprocess.run([jb, "build", ".", "-W", "--keep-going"], cwd=clone, env=env, capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", status
    assert sorted(p.name for p in (clone / "_build" / "results" / "ci").glob("*.json")), "no numbers written"
    assert (clone / "_build" / "html" / "index.html").is_file()
