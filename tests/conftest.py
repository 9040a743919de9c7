"""Fixtures shared by several test modules."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drdm.shared import ENV as SHARED_ENV, shared_root


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors on a shared 2-core machine run fastest on one thread (no oversubscription).

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the thread count is
    restored after the module.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ci_book_runs(tmp_path_factory) -> dict:
    """The ci-profile book, run side by side on one thread each (2 cores: neither waits for the other):

    - ``clone``: `make book`'s run in a fresh clone of this checkout (numbers under its ``_build/results``);
    - ``here``: a run of this working tree into a temporary results root;
    - ``again`` (only when tracked files differ from HEAD, so the clone does not run this tree's code, or when
      there is no git checkout to clone): a second run of this working tree.

    Returns ``{"clone": <clone folder or None>, "results": {name: <results root>}}``. Shared by the clean-clone
    test and the reproducibility test, so the suite runs the whole book twice, not three times.
    """
    root = Path(__file__).resolve().parents[1]
    base = tmp_path_factory.mktemp("ci_books")
    runs = {"here": (root, base / "here" / "results", base / "here" / "executed")}
    clone = base / "clone" if (root / ".git").exists() else None     # an unpacked archive: no clone, two runs here
    if clone is not None:
        subprocess.run(["git", "clone", "--quiet", str(root), str(clone)], check=True, timeout=300)
        runs["clone"] = (clone, clone / "_build" / "results", clone / "book" / "_executed")
    if clone is None or subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                       capture_output=True, text=True, check=True).stdout.strip():
        runs["again"] = (root, base / "again" / "results", base / "again" / "executed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}     # this checkout's runs keep the suite's DRDM_OUTPUT_ROOT
    bare = {k: v for k, v in env.items() if k != "DRDM_OUTPUT_ROOT"}                 # the clone's: as `make book` runs
    # ...with this checkout's shared data (a clone in a temporary folder has no ../shared), so the two runs
    # differ only in where they run; `.ci/run`'s DRDM_SHARED=none pass covers a machine without it
    shared = shared_root()
    if shared is not None:
        bare[SHARED_ENV] = str(shared)
    procs = {name: subprocess.Popen([sys.executable, "-m", "drdm.bookrun", "--profile", "ci", "--results", str(res),
                                     "--out", str(out)], cwd=cwd, env=bare if name == "clone" else env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, (cwd, res, out) in runs.items()}
    for name, p in procs.items():
        out, _ = p.communicate(timeout=1800)
        assert p.returncode == 0, f"{name}: " + out[-3000:]
    return {"clone": clone, "results": {name: res for name, (_, res, _) in runs.items()}}
