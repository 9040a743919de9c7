"""Result files with provenance: numbers + commit + profile + seed + device + wall time."""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from .files import atomic_write

__all__ = ["repo_root", "results_dir", "git_commit", "machine", "output_dir", "save_results", "join_timings", "Timer"]

#: the copy of the repository's ``results/`` inside a built package (``setup.py`` puts it there)
PACKAGED_RESULTS = Path(__file__).resolve().parent / "_results"


def repo_root(start: str | Path | None = None) -> Path:
    """The nearest folder above ``start`` (default: cwd) holding ``pyproject.toml``."""
    p = Path(start or Path.cwd()).resolve()
    for cand in (p, *p.parents):
        if (cand / "pyproject.toml").exists() and (cand / "drdm").is_dir():
            return cand
    return p


def results_dir() -> Path:
    """The folder of the committed results (``results/phantom_model``, ``results/bench``,
    ``results/<profile>/...``), for code that *reads* recorded runs.

    In order: ``results/`` of the checkout around the current directory; ``results/`` of the
    checkout this package was imported from (an editable install); the copy of ``results/``
    that an installed package carries (``drdm/_results``, copied at build time by
    ``setup.py``, e.g. by ``pip install "drdm @ git+URL@REF"`` on Colab). The first that
    exists is returned; when none does, the first (absent) path, so callers report it.
    Writers use :func:`save_results` (which honours ``DRDM_OUTPUT_ROOT``) instead.
    """
    here = repo_root() / "results"
    src = Path(__file__).resolve().parents[1]
    candidates = [here]
    if (src / "pyproject.toml").is_file():
        candidates.append(src / "results")
    candidates.append(PACKAGED_RESULTS)
    return next((c for c in candidates if c.is_dir()), here)


def git_commit(root: str | Path | None = None) -> str:
    """Short commit hash of the repository, with ``+dirty`` when sources changed; ``unknown`` outside git."""
    try:
        cwd = str(root or repo_root())
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "drdm"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Timer:
    """Wall-clock timer started at construction; ``elapsed`` in seconds."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _clean(x.tolist())
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        return _clean(x.item())
    if hasattr(x, "tolist"):
        return _clean(x.tolist())
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 6)
    return x


#: keys whose numbers (or ``{name: number}`` tables) time a run rather than measure its result, and
#: ``machine`` (:func:`machine`'s table, what ran it): kept out of ``numbers`` (they differ between
#: identical runs)
TIMING_KEYS = ("wall_time_s", "wall_s", "images_per_s", "samples_per_s", "seconds", "machine")


def _split_timings(x, moved: dict, path: str):
    """``x`` without :data:`TIMING_KEYS` entries (at any depth); those go to ``moved``."""
    if not isinstance(x, dict):
        return x
    out = {}
    for k, v in x.items():
        key = f"{path}{k}"
        if k in TIMING_KEYS and (isinstance(v, (int, float)) or (k == "machine" and isinstance(v, dict)) or (
                isinstance(v, dict) and v and all(isinstance(u, (int, float)) for u in v.values()))):
            moved[key] = v
        else:
            out[k] = _split_timings(v, moved, key + ".")
    return out


def join_timings(numbers, timings: dict, path: str = ""):
    """The inverse of the split :func:`save_results` makes: ``numbers`` with each ``timings`` entry
    filed under a :data:`TIMING_KEYS` name (keyed by its dotted path, e.g. ``"cache.slices.drdm.<slice>.seconds"``)
    put back in place, so a saved record reads as its writer built it. The path is followed key by key
    through ``numbers``, never split on its dots (slice and cell names may hold dots). A ``timings``
    entry of another name, or whose parent ``numbers`` lacks, stays out."""
    if not isinstance(numbers, dict):
        return numbers
    out = {k: join_timings(v, timings, f"{path}{k}.") for k, v in numbers.items()}
    out.update({k: timings[path + k] for k in TIMING_KEYS if path + k in timings})
    return out


def machine() -> dict:
    """What ran the numbers, for reading a record's timings: the architecture, the widest vector
    instruction set PyTorch's CPU kernels use here (e.g. ``"AVX2"``, ``"AVX512"``), the cores this
    process may use and PyTorch's thread count at the call (a record's: when it was saved; a few-shot
    cell's: while it trained). Two machines of one architecture can differ severalfold in speed by
    the vector set alone, and their results agree to rounding, not to the bit."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"arch": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cores": cores, "threads": torch.get_num_threads()}


def output_dir(out_dir: str | Path = "results") -> Path:
    """Where writers put ``out_dir``: as given when absolute, else under the repository root,
    or under ``$DRDM_OUTPUT_ROOT`` when it is set (the test suite sets it, so re-executing the
    notebooks under nbval leaves the tracked results alone)."""
    out = Path(out_dir)
    return out if out.is_absolute() else Path(os.environ.get("DRDM_OUTPUT_ROOT") or repo_root()) / out


def save_results(name: str, numbers: dict, *, profile: str, seed: int, device: str,
                 wall_time_s: float, out_dir: str | Path = "results", data: str = "phantom",
                 timings: dict | None = None) -> Path:
    """Write ``<out_dir>/<profile>/<name>.json`` atomically and return its path.

    A relative ``out_dir`` is resolved by :func:`output_dir` (repository root, or
    ``$DRDM_OUTPUT_ROOT``).

    ``numbers`` may hold tensors and numpy values; floats are rounded to 6
    digits so reruns on one machine give identical ``numbers``. Timing and
    machine details sit under ``provenance`` (excluded from result comparisons):
    ``wall_time_s``, the optional ``timings`` and any :data:`TIMING_KEYS` entry
    found in ``numbers`` (moved there, under its path, e.g. ``"last.wall_s"``).
    """
    out = output_dir(out_dir) / profile
    out.mkdir(parents=True, exist_ok=True)
    moved = dict(timings or {})
    numbers = _split_timings(numbers, moved, "")
    moved.pop("wall_time_s", None)          # a runner's own total: provenance has wall_time_s already
    doc = {
        "name": name, "profile": profile, "seed": seed, "data": data,
        "numbers": _clean(numbers),
        "provenance": {"commit": git_commit(), "device": str(device), "wall_time_s": round(wall_time_s, 1),
                       "torch": torch.__version__, "python": platform.python_version(),
                       "machine": machine(), **({"timings": _clean(moved)} if moved else {})},
    }
    text = json.dumps(doc, indent=1) + "\n"
    return atomic_write(out / f"{name}.json", lambda tmp: Path(tmp).write_text(text))
