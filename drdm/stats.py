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
           "crossed_interval", "interval_coverage", "decide", "MDD_FACTOR"]


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


def _cluster_table(d, clusters):
    """``(d, sums, counts, names)``: ``d`` as ``(subjects, replicates)`` without all-NaN rows and columns,
    its per-(subject, cluster) sums and counts of the non-missing cells, ``(subjects, clusters)`` each,
    and the clusters' names in column order."""
    d = np.asarray(d, float)
    if d.ndim == 1:
        d = d[:, None]
    d = np.where(np.isfinite(d), d, np.nan)          # an infinite cell is a missing one
    keep = ~np.all(np.isnan(d), axis=0)
    d = d[:, keep]
    clusters = np.arange(d.shape[1]) if clusters is None else np.asarray(list(clusters))[keep]
    d = d[~np.all(np.isnan(d), axis=1)]
    names = list(dict.fromkeys(clusters.tolist()))
    if not names:
        return d, np.zeros((d.shape[0], 0)), np.zeros((d.shape[0], 0)), names
    member = np.stack([clusters == c for c in names], axis=1).astype(float)      # replicates x clusters
    ok = ~np.isnan(d)
    return d, np.where(ok, d, 0.0) @ member, ok.astype(float) @ member, names


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

    With few clusters this interval is too narrow: resampling k clusters sees (k - 1) / k of their
    variance and a percentile interval ignores how poorly k of them estimate it (at 3 labelled draws
    it covers a known difference about 80 % of the time where the draws vary as much as the subjects,
    ``tests/test_stats.py``). :func:`crossed_interval` covers better.

    Args:
        d: ``(n_subjects, n_replicates)`` differences; NaN (or an infinite value) where a cell is missing.
        clusters: length ``n_replicates`` (default: every column its own cluster).

    Returns:
        ``{"mean", "ci", "se", "mdd", "confidence", "n", "replicates", "clusters"}``, or ``None`` with
        fewer than 2 subjects.
    """
    d, sums, counts, _ = _cluster_table(d, clusters)
    if d.shape[0] < 2 or d.shape[1] == 0:
        return None
    n, k = sums.shape
    rng = np.random.default_rng(seed)
    rows, picks = np.zeros((n_resamples, n)), np.zeros((n_resamples, k))
    for b in range(n_resamples):                   # the draws in this order, so a seed gives one interval
        np.add.at(rows[b], rng.integers(0, n, n), 1.0)
        np.add.at(picks[b], rng.integers(0, k, k), 1.0)
    # each resample's mean of the selected cells: its subjects' and clusters' multiplicities weight
    # the per-(subject, cluster) sums and counts
    stats = np.einsum("bi,ic,bc->b", rows, sums, picks) / np.einsum("bi,ic,bc->b", rows, counts, picks)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    se = float(stats.std(ddof=1))
    return {"mean": float(np.nanmean(d)), "ci": [float(lo), float(hi)], "se": se, "mdd": MDD_FACTOR * se,
            "confidence": confidence, "n": int(n), "replicates": int(d.shape[1]), "clusters": int(k)}


def crossed_interval(d, clusters=None, *, confidence: float = 0.95, bootstrap: bool = False) -> dict | None:
    """Mean of paired differences on crossed (test subject x replicate) cells with a t-interval that
    counts both sources of variance: the one the few-shot record's verdict uses.

    Each subject's differences are first averaged within each cluster (a labelled draw and its seeds),
    giving an ``(n, k)`` table with subjects and clusters crossed. A two-way random-effects analysis of
    variance of that table (mean squares ``MS_s``, ``MS_c``, ``MS_e``) estimates the variance of its
    grand mean as ``s2_s / n + s2_c / k + s2_e / (n k)`` (components truncated at 0) and Satterthwaite's
    formula its degrees of freedom, so with 3 labelled draws whose effects dominate the interval uses
    t on about 2 degrees of freedom, as it must. Where the clusters hardly differ it approaches a
    t-interval over subjects. With one cluster the between-cluster variance cannot be estimated: the
    interval is then over subjects alone (``"between_clusters": None``) and says nothing about a redraw.
    Missing cells (NaN or infinite) are left out of their cluster's average; a subject missing a whole
    cluster is dropped.

    Coverage (``tests/test_stats.py``, chapter 4): about 0.90-0.95 at 3 clusters and 20 subjects,
    about 0.87-0.95 at 2, where the percentile bootstrap gives about 0.76-0.96 at 3 (the lower
    the more the clusters differ). With 2 clusters a
    between-cluster variance estimated at 0 (``components["between_clusters"] == 0``) rests on one
    degree of freedom: read such an interval as over subjects only.

    Returns:
        ``{"mean", "ci", "se", "df", "mdd", "confidence", "n", "replicates", "clusters",
        "components": {"subjects", "between_clusters", "residual"} (variances), "cluster_means"
        (each cluster's mean difference, by name), "method": "t"}``
        (``mdd``: the smallest difference a two-sided 5 % test detects at 80 % power,
        ``(t_0.975 + t_0.80) x se`` on ``df``), or ``None`` with fewer than 2 subjects. With
        ``bootstrap``, also ``"bootstrap": {"ci", "se"}`` of :func:`crossed_bootstrap` on the same cells
        (the records keep it beside the interval their rule uses).
    """
    from scipy.stats import t as student
    raw = d
    d, sums, counts, names = _cluster_table(d, clusters)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = sums / counts
    table = table[np.all(np.isfinite(table), axis=1)]
    n, k = table.shape
    if n < 2 or k == 0:
        return None
    mean = float(table.mean())
    if k == 1:
        var, df = table[:, 0].var(ddof=1) / n, n - 1
        comps = {"subjects": float(table[:, 0].var(ddof=1)), "between_clusters": None, "residual": None}
    else:
        ms_s = k * table.mean(axis=1).var(ddof=1)
        ms_c = n * table.mean(axis=0).var(ddof=1)
        resid = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + mean
        ms_e = float((resid ** 2).sum() / ((n - 1) * (k - 1)))
        a, c = float(ms_s > ms_e), float(ms_c > ms_e)          # components truncated at 0
        terms = [(a * ms_s, n - 1), (c * ms_c, k - 1), ((1 - a - c) * ms_e, (n - 1) * (k - 1))]
        var = sum(t for t, _ in terms) / (n * k)
        df = (n * k * var) ** 2 / sum(t ** 2 / f for t, f in terms if t != 0) if var > 0 else n - 1
        comps = {"subjects": float(max(ms_s - ms_e, 0.0) / k), "between_clusters": float(max(ms_c - ms_e, 0.0) / n),
                 "residual": ms_e}
    se = float(np.sqrt(var))
    half = float(student.ppf(0.5 + confidence / 2, df)) * se
    mdd = float(student.ppf(0.975, df) + student.ppf(0.80, df)) * se
    out = {"mean": mean, "ci": [mean - half, mean + half], "se": se, "df": float(df), "mdd": mdd,
            "confidence": confidence, "n": int(n), "replicates": int(d.shape[1]), "clusters": int(k),
            "components": comps, "cluster_means": {str(c): float(v) for c, v in zip(names, table.mean(axis=0))},
            "method": "t"}
    if bootstrap:
        boot = crossed_bootstrap(raw, clusters)
        out["bootstrap"] = {"ci": boot["ci"], "se": boot["se"]}
    return out


def interval_coverage(n_subjects: int, n_clusters: int, per_cluster: int, *, sd_subject: float,
                      sd_cluster: float, sd_noise: float, n_sim: int = 400, n_resamples: int = 400,
                      seed: int = 0) -> dict:
    """How often :func:`crossed_interval` and :func:`crossed_bootstrap` cover a known difference.

    Simulates ``n_sim`` tables ``d[s, j] = subject effect + cluster effect + noise`` (normal, with the
    given standard deviations; true difference 0) at a design of ``n_subjects`` x (``n_clusters``
    clusters of ``per_cluster`` replicates) and returns ``{"t": fraction, "bootstrap": fraction}``.
    """
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(n_clusters), per_cluster)
    hits = {"t": 0, "bootstrap": 0}
    for i in range(n_sim):
        d = (sd_subject * rng.normal(size=(n_subjects, 1)) + sd_cluster * rng.normal(size=n_clusters)[cl][None]
             + sd_noise * rng.normal(size=(n_subjects, cl.size)))
        for name, res in (("t", crossed_interval(d, cl)),
                          ("bootstrap", crossed_bootstrap(d, cl, n_resamples=n_resamples, seed=i))):
            hits[name] += res["ci"][0] <= 0 <= res["ci"][1]
    return {k: v / n_sim for k, v in hits.items()}


def decide(diff: dict | None, paper: float) -> str:
    """The Table 2 decision rule (chapter 4, stated before the numbers), on an interval in points:
    ``"reproduced"`` when it lies above 0, ``"contradicted"`` when it lies below the paper's
    difference ``paper`` (and does not lie above 0), otherwise ``"inconclusive"``; ``"not decided"``
    while the interval rests on one cluster (``diff["clusters"] == 1``: one labelled draw, or at 20
    subjects one training seed), since it is then over test subjects alone and blind to a redraw."""
    if diff is None:
        return "not compared"
    if diff.get("clusters", 2) < 2:
        return "not decided"
    lo, hi = diff["ci"]
    if lo > 0:
        return "reproduced"
    if hi < paper:
        return "contradicted"
    return "inconclusive"
