"""Helpers shared by the downstream tasks: profiles, data, checkpoints, statistics, output."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

log = logging.getLogger("drdm.tasks")

def apply_overrides(profile, overrides: dict):
    """A copy of the profile dataclass with ``overrides`` (unknown names raise ``TypeError``)."""
    names = {f.name for f in dataclasses.fields(profile)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown profile option(s) {unknown}; known: {sorted(names)}")
    return dataclasses.replace(profile, **overrides)


@contextlib.contextmanager
def num_threads(n: int | None):
    """Temporarily set torch's intra-op threads (``None``: leave unchanged)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------- checkpoints

def load_drdm(checkpoint, ndim: int, device) -> tuple[object | None, str | None, str | None]:
    """The tasks' "skip with a reason" door to :func:`drdm.checkpoint.resolve`: ``(net, path, None)``,
    or ``(None, None, reason)`` when no ``ndim``-D model is shipped and none was given, or the
    network has another dimension. A named checkpoint that does not exist is an error, not a skip."""
    from ..checkpoint import CheckpointError, load, resolve
    try:
        path = resolve(checkpoint, ndim)
    except CheckpointError as e:
        if checkpoint is not None:
            raise
        return None, None, str(e)
    net = load(path, device=device)
    if net.config.ndim != ndim:
        return None, None, f"{path}: a {net.config.ndim}-D DRDM network, the data are {ndim}-D"
    return net, str(path), None


# ---------------------------------------------------------------- data

def phantom_records(kind: str, n: int, size: int, seed: int, phases=("ED",)):
    """Phantom subjects as :class:`drdm.data.Record` (2-D cardiac or 3-D thorax)."""
    from ..data import ACDC_CONVENTION, Record
    from ..phantoms import cardiac_phantom, thorax_phantom
    records = []
    for k in range(n):
        if kind == "cardiac":
            for ph in phases:
                img, lab = cardiac_phantom(seed + k, size, ph)
                records.append(Record(img, lab, (1.0, 1.0), np.eye(4), f"phantom{seed + k:04d}", ph,
                                      "phantom", ACDC_CONVENTION, "", {}))
        elif kind == "thorax":
            img, lab = thorax_phantom(seed + k, size)
            records.append(Record(img, lab, (1.0, 1.0, 1.0), np.eye(4), f"thorax{seed + k:04d}", None,
                                  "phantom", "lung mask: 0 background, 1 left, 2 right lung", "", {}))
        else:
            raise ValueError(f"unknown phantom kind {kind!r}")
    return records


def to_tensors(records) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, *S) float32, labels (N, 1, *S) int64)``; every record needs a label."""
    missing = [r.subject for r in records if r.label is None]
    if missing:
        raise ValueError(f"records without label maps (subjects {sorted(set(missing))[:5]})")
    shapes = {tuple(r.image.shape) for r in records}
    if len(shapes) != 1:
        raise ValueError(f"records have different shapes {sorted(shapes)[:4]}; preprocess them to one size")
    imgs = torch.from_numpy(np.stack([np.asarray(r.image, np.float32) for r in records]))[:, None]
    labs = torch.from_numpy(np.stack([np.asarray(r.label).astype(np.int64) for r in records]))[:, None]
    return imgs, labs


def fit_size(records, size: int):
    """Preprocess (Section 3.2) records whose shape is not ``size`` per axis."""
    from ..data import preprocess_record
    out = []
    for r in records:
        if tuple(r.image.shape) != (size,) * r.image.ndim:
            r = preprocess_record(r, size)
        out.append(r)
    return out


def split_subjects(records, test_fraction: float, seed: int) -> tuple[list, list]:
    """Subject-level train/test split (:func:`drdm.data.subject_split`); asserts no subject is in both."""
    from ..data import subject_split
    parts = subject_split(records, (1.0 - test_fraction, 0.0, test_fraction), seed=seed)
    train, test = parts["train"], parts["test"]
    leak = {r.subject for r in train} & {r.subject for r in test}
    assert not leak, f"subjects in both train and test: {sorted(leak)}"
    if not train or not test:
        raise ValueError(f"need at least one training and one test subject; got {len(train)} and "
                         f"{len(test)} records from {len({r.subject for r in records})} subjects")
    return train, test


# ---------------------------------------------------------------- statistics

def finite(values, fill: float) -> np.ndarray:
    """``inf`` (an empty prediction's surface distance) replaced by ``fill``."""
    a = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(a), a, fill)


def wilcoxon(a, b) -> float | None:
    """Two-sided paired Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``).

    1.0 when every pair is equal; ``None`` with fewer than 2 pairs.
    """
    from scipy.stats import wilcoxon as _w
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2:
        return None
    d = a - b
    if np.all(np.abs(d) <= 1e-12 * max(1.0, np.abs(a).max())):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(_w(a, b).pvalue)
        except ValueError:
            return None


def paired_difference(a, b, *, confidence: float = 0.95, n_resamples: int = 4000, seed: int = 0) -> dict | None:
    """Mean of ``a - b`` over pairs (e.g. per test image) with a bootstrap confidence interval.

    ``scipy.stats.bootstrap`` (percentile method, fixed seed, so reruns agree).
    Returns ``{"mean", "ci": [lo, hi], "confidence", "n"}``; ``None`` with fewer than 2 pairs.
    """
    from scipy.stats import bootstrap
    d = np.asarray(a, float) - np.asarray(b, float)
    if d.size < 2:
        return None
    if np.all(d == d[0]):
        lo = hi = float(d[0])
    else:
        res = bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                        method="percentile", random_state=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"mean": float(d.mean()), "ci": [lo, hi], "confidence": confidence, "n": int(d.size)}


def summary(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()) if a.size else None,
            "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}


def fmt(x, digits: int = 1, scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x * scale:.{digits}f}"


def fmt_p(p) -> str:
    if p is None:
        return "–"
    return "<.001" if p < 1e-3 else f"{p:.3f}"


def write_outputs(name: str, result: dict, markdown: str, out_dir, profile: str, seed: int,
                  device: str, wall: float, data: str) -> dict:
    """``<out_dir>/<profile>/<name>.json`` (with provenance) and ``<name>.md``; returns the paths."""
    from ..provenance import save_results
    path = save_results(name, result, profile=profile, seed=seed, device=device, wall_time_s=wall,
                        out_dir=out_dir, data=data)
    md = path.with_suffix(".md")
    md.write_text(markdown + "\n")
    return {"json": str(path), "markdown": str(md)}


def jsonable(x):
    """Check that ``x`` survives ``json.dumps`` (inf/nan are not JSON): raises otherwise."""
    json.dumps(x, allow_nan=False)
    return x


def compare_sentence(label: str, diff: dict | None, p: float | None, unit: str = "Dice points",
                     spread: float | None = None) -> str:
    """One honest line about a paired comparison: the mean difference, its CI and the verdict.

    ``diff`` from :func:`paired_difference` (fractions); the verdict is "better" or "worse" only
    when the confidence interval excludes zero, else "no clear difference". ``spread`` (a
    fraction): how far this difference moves when only the seed changes (a phantom run's
    cross-machine proxy, ``tools/phantom_spread.py``); a difference no larger is "no conclusion".
    """
    if diff is None:
        return f"{label}: too few test cases to compare."
    lo, hi = diff["ci"]
    verdict = ("better" if lo > 0 else "worse" if hi < 0 else "no clear difference")
    if spread is not None and verdict != "no clear difference" and abs(diff["mean"]) <= spread:
        verdict = (f"no conclusion: the seed alone moves this difference by {100 * spread:.1f} {unit} "
                   "(results/cpu/phantom_spread.json)")
    ptxt = "" if p is None else (", Wilcoxon p < 0.001" if p < 0.001 else f", Wilcoxon p = {p:.3f}")
    return (f"{label}: {100 * diff['mean']:+.1f} {unit} ({100 * diff['confidence']:.0f} % CI "
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}], n = {diff['n']}{ptxt}): {verdict}.")


def phantom_spread(task: str) -> dict:
    """``{comparison: spread (fraction)}`` of the recorded cross-seed spread of the ``cpu`` phantom
    runs (``results/cpu/phantom_spread.json``) for ``task`` (``"segmentation"`` or
    ``"registration"``); empty when there is no record."""
    from ..provenance import results_dir as committed_results
    path = Path(committed_results()) / "cpu" / "phantom_spread.json"
    if not path.is_file():
        return {}
    block = json.loads(path.read_text())["numbers"]["spread"].get(task, {})
    return {k: v["spread"] for k, v in block.items()}


def load_recorded(name: str, profile: str = "cpu", results_dir=None) -> dict | None:
    """A recorded experiment ``results/<profile>/<name>.json`` with a one-line caption, or ``None``.

    Returns ``{"numbers": ..., "caption": "*Profile ..., data ..., subjects, seeds, checkpoint, time.*"}``
    (for notebooks that show a long run without re-running it).
    """
    from ..provenance import results_dir as committed_results
    path = Path(results_dir or committed_results()) / profile / f"{name}.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    rec, prov = doc["numbers"], doc.get("provenance", {})
    split = rec.get("split", {})
    if "protocol" in rec:                 # the few-shot record: labelled subsets of a pool, validation, test
        config = rec["protocol"]
        subjects = (f"{' or '.join(map(str, config['labelled']))} labelled of {len(split['order'])}, "
                    f"{len(split['val'])} validation and {len(split['test'])} test subjects")
    else:
        config = rec["config"]
        subjects = (f"{len(split.get('train_subjects', []))} training and {len(split.get('test_subjects', []))} "
                    "test subjects")
    ckpt = rec.get("drdm_checkpoint") or (rec.get("drdm_checkpoint_sha256") or "")[:12] or None
    caption = (f"*Profile `{doc['profile']}`, data `{doc.get('data')}` "
               f"({subjects}), seeds {config.get('seeds')}, DRDM checkpoint "
               f"`{ckpt}`, {prov.get('wall_time_s', 0) / 60:.0f} min on {prov.get('device')}, "
               f"commit {prov.get('commit')}.*")
    return {"numbers": rec, "caption": caption}


def show_recorded(name: str, verdict, profile: str = "cpu") -> bool:
    """Display a recorded run (:func:`load_recorded`) in a notebook: caption, table, and the
    lines of ``verdict(numbers)``. Prints a hint and returns False when there is none."""
    rec = load_recorded(name, profile)
    if rec is None:
        print(f"no recorded run results/{profile}/{name}.json (drdm experiment ... --profile {profile} makes one)")
        return False
    from IPython.display import Markdown, display
    display(Markdown(rec["caption"] + "\n\n" + rec["numbers"]["markdown"]))
    print("\n".join(verdict(rec["numbers"])))
    return True


# ---------------------------------------------------------------- the experiment skeleton

class Experiment:
    """What the downstream runners share: the profile, seeds, device and clock; the DRDM model
    (loaded, or skipped with its reason); and the result's common fields and files.

    ``Experiment(task, table, profile, overrides, seeds, methods, allowed, device)``; then, inside
    ``with num_threads(exp.prof.threads)``, :meth:`load_drdm` and finally :meth:`finish`.
    """

    def __init__(self, task: str, table: dict, profile: str, overrides: dict, seeds, methods: Sequence[str],
                 allowed: Sequence[str], device: str = "auto"):
        import time
        if profile not in table:
            raise ValueError(f"profile must be one of {sorted(table)}, got {profile!r}")
        self.task, self.profile = task, profile
        self.prof = apply_overrides(table[profile], overrides)
        self.seeds = tuple(self.prof.seeds if seeds is None else seeds)
        self.methods = tuple(methods)
        if not self.methods or set(self.methods) - set(allowed):
            raise ValueError(f"{'methods' if task == 'segmentation' else 'synthesis'} must be taken from "
                             f"{tuple(allowed)}, got {self.methods}")
        from ..runner import pick_device
        self.device = pick_device(device)
        self.t0 = time.perf_counter()
        self.skipped: dict[str, str] = {}
        self.net, self.checkpoint = None, None

    def load_drdm(self, checkpoint, ndim: int, levels: Sequence[int]):
        """Load the DRDM model when ``"drdm"`` is asked for; record why when it cannot be."""
        if "drdm" not in self.methods:
            return None
        self.net, self.checkpoint, reason = load_drdm(checkpoint, ndim, self.device)
        if self.net is None:
            self.skipped["drdm"] = reason
            log.warning("%s: skipping drdm: %s", self.task, reason)
        else:
            from ..sampling import check_levels
            check_levels(levels, self.net.config.timesteps, "DRDM level T'")
        return self.net

    def finish(self, data, fields: dict, config: dict, markdown, out_dir=None, name: str | None = None) -> dict:
        """The result: common header, ``fields``, Markdown (``markdown(result)``), wall time; written
        to ``<out_dir>/<profile>/<name>.json`` and ``.md`` when ``out_dir`` is given."""
        import time
        result = {"task": self.task, "profile": self.profile, "data": data if isinstance(data, str) else "records",
                  "config": {**dataclasses.asdict(self.prof), "seeds": list(self.seeds), **config},
                  "device": str(self.device),
                  "drdm_checkpoint": None if self.checkpoint is None else Path(str(self.checkpoint)).name,
                  "skipped": self.skipped, **fields}
        result["markdown"] = markdown(result)
        result["wall_time_s"] = round(time.perf_counter() - self.t0, 2)
        jsonable(result)
        if out_dir is not None:
            result["files"] = write_outputs(name or self.task, result, result["markdown"], out_dir, self.profile,
                                            self.seeds[0], str(self.device), result["wall_time_s"], result["data"])
        return result
