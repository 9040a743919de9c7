"""The statistics of the book's comparisons: paired Wilcoxon tests, bootstrap intervals of paired
differences, summaries, number formats and the one-line verdict of a comparison.

Used by the Table 2 and Table 3 runners (:mod:`drdm.tasks`) and the chapters; everything here is
pure (numbers in, numbers or text out).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["finite", "wilcoxon", "paired_difference", "summary", "fmt", "fmt_p", "compare_sentence", "crossed_bootstrap",
           "decide", "MDD_FACTOR"]


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


#: z_{0.975} + z_{0.80}: the minimum detectable difference at 80 % power of a two-sided 5 % test is this
#: many standard errors
MDD_FACTOR = 1.959964 + 0.841621


def crossed_bootstrap(d, clusters=None, *, confidence: float = 0.95, n_resamples: int = 4000,
                      seed: int = 0) -> dict | None:
    """Mean of paired differences scored on every (test subject, replicate) with a two-way bootstrap.

    In a few-shot experiment every trained model (a replicate: labelled draw x training seed) scores
    every test subject, so subjects and replicates are crossed, not nested: resampling replicates
    inside each subject would treat the same model's scores on different subjects as independent and
    miss the draw-to-draw variance. Each resample therefore draws the subjects (rows) with replacement
    and, independently, the replicate clusters (``clusters[j]`` names column ``j``'s cluster, e.g. its
    labelled draw; every column of a drawn cluster comes along), and takes the mean of the selected
    cells. Percentile interval; ``se`` is the bootstrap standard deviation and ``mdd`` the minimum
    detectable difference at 80 % power (:data:`MDD_FACTOR` x ``se``).

    Args:
        d: ``(n_subjects, n_replicates)`` differences; NaN where a cell is missing.
        clusters: length ``n_replicates`` (default: every column its own cluster).

    Returns:
        ``{"mean", "ci", "se", "mdd", "confidence", "n", "replicates", "clusters"}``, or ``None`` with
        fewer than 2 subjects.
    """
    d = np.asarray(d, float)
    if d.ndim == 1:
        d = d[:, None]
    keep = ~np.all(np.isnan(d), axis=0)
    d = d[:, keep]
    clusters = np.arange(d.shape[1]) if clusters is None else np.asarray(list(clusters))[keep]
    rows = ~np.all(np.isnan(d), axis=1)
    d = d[rows]
    if d.shape[0] < 2 or d.shape[1] == 0:
        return None
    names = list(dict.fromkeys(clusters.tolist()))
    members = [np.flatnonzero(clusters == c) for c in names]
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for b in range(n_resamples):
        r = rng.integers(0, d.shape[0], d.shape[0])
        cols = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        stats[b] = np.nanmean(d[np.ix_(r, cols)])
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    se = float(stats.std(ddof=1))
    return {"mean": float(np.nanmean(d)), "ci": [float(lo), float(hi)], "se": se, "mdd": MDD_FACTOR * se,
            "confidence": confidence, "n": int(d.shape[0]), "replicates": int(d.shape[1]), "clusters": len(names)}


def decide(diff: dict | None, paper: float) -> str:
    """The Table 2 decision rule (chapter 4, stated before the numbers), on an interval in points:
    ``"reproduced"`` when it lies above 0, ``"contradicted"`` when it lies below the paper's
    difference ``paper`` (and does not lie above 0), otherwise ``"inconclusive"``."""
    if diff is None:
        return "not compared"
    lo, hi = diff["ci"]
    if lo > 0:
        return "reproduced"
    if hi < paper:
        return "contradicted"
    return "inconclusive"
