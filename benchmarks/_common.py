"""Shared helpers for the benchmark scripts: timing loops, peak memory, result files."""
from __future__ import annotations

import json
import platform
import resource
import time

import torch

from drdm.provenance import git_commit, repo_root


def rate(fn, items_per_call: int, min_time: float, min_calls: int = 2, warmup: bool = True) -> float:
    """Items per second of ``fn`` after one warm-up call (unless ``warmup=False``, for calls
    long enough that one-time costs do not matter), timed for at least ``min_time`` s."""
    if warmup:
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= min_calls:
            return n * items_per_call / dt


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB, Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def write(name: str, doc: dict, device: str | None = None) -> None:
    """``results/bench/<name>.json``; ``<name>_cuda.json`` for a CUDA run, so a GPU run never
    replaces the CPU numbers chapter 7 shows. ``device`` names the run's device; without it a
    process that has used CUDA counts as a CUDA run."""
    cuda = torch.cuda.is_initialized() if device is None else torch.device(device).type == "cuda"
    name = f"{name}_cuda" if cuda else name
    out = repo_root() / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    doc = {**doc, "commit": git_commit(), "torch": torch.__version__}
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote results/bench/{name}.json")
