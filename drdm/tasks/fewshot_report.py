"""The few-shot record: per-subject scores over replicates, crossed t-intervals (subjects x labelled
draws), flags, the stated decision rule, and the Markdown tables (:func:`summarise`).

A *replicate* is one trained U-Net: a labelled set (``d0``, ``d1``, ... at the small size; ``large``)
and a training seed. Every replicate scores every test subject, so a method's score for a subject is
the mean over its replicates, and a difference between two methods is taken replicate by replicate
(same labelled set, same seed). Its interval, :func:`drdm.stats.crossed_interval`, is a t-interval
over test subjects crossed with labelled draws (at the large size, which has one labelled set, with
its training seeds: that interval holds the set fixed). The rule (:func:`drdm.stats.decide`): *reproduced* when the 95 % interval of the
average-Dice difference lies above 0, *contradicted* when it lies below the paper's difference,
otherwise *inconclusive*, printing the minimum detectable difference at 80 % power.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..stats import crossed_interval, decide, summary
from ..data.records import CARDIAC_STRUCTURES as STRUCTURES

__all__ = ["FEWSHOT_METHODS", "subject_scores", "mean_dice", "set_size", "summarise", "fewshot_markdown",
           "verdict_lines", "n_labelled", "PAPER", "COMPARISONS", "VERDICT_COMPARISONS", "METHOD_LABELS",
           "plateau_change", "FLAG_MOVING", "FLAG_BELOW", "copies_figure"]

#: cell methods; ``drdm_low`` is DRDM at the book's earlier dose (the dose ablation)
FEWSHOT_METHODS = ("none", "bigaug", "elastic", "drdm", "drdm_low")
METHOD_LABELS = {"none": "none", "bigaug": "BigAug", "elastic": "Elastic", "drdm": "DRDM (release dose)",
                 "drdm_low": "DRDM (T' 20/30)"}
#: Table 2's average Dice (%) on ACDC: {labelled subjects: {method: Dice}}
PAPER = {5: {"none": 46.9, "bigaug": 59.7, "drdm": 68.2}, 20: {"none": 65.8, "bigaug": 66.9, "drdm": 77.5}}
#: the differences reported (a, b): a - b
COMPARISONS = (("drdm", "bigaug"), ("drdm", "none"), ("bigaug", "none"), ("elastic", "none"),
               ("drdm_low", "none"), ("drdm", "drdm_low"))
#: the two the decision rule judges against the paper (Table 2's claims)
VERDICT_COMPARISONS = COMPARISONS[:2]
#: flags: validation Dice moved by at least this over the last fifth of training (Dice fraction) ...
FLAG_MOVING = 0.02
#: ... or ended this far below the median of the same set size and method's other runs
FLAG_BELOW = 0.10
METRICS = ("dice", "sens", "prec", "asd")


# ---------------------------------------------------------------- scoring (one scorer on drdm.metrics)

def subject_scores(pred: torch.Tensor, target: torch.Tensor, subjects: Sequence[str], *,
                   surfaces: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    """``{subject: {structure: {dice, sens, prec[, asd]}}}`` from slice predictions ``(N, 1, S, S)``.

    Dice, sensitivity and precision (:mod:`drdm.metrics`) pool all of a subject's slices (both
    phases), as a volume score; a structure absent from both prediction and reference scores 1
    (:mod:`drdm.metrics`' empty-set rule). ASD (pixels of the protocol grid) is the mean over the
    slices whose reference holds the structure; a prediction without it counts as the slice diagonal.
    """
    from .. import metrics
    p_all, t_all = pred[:, 0].numpy(), target[:, 0].numpy()
    diag = float(np.hypot(*t_all.shape[1:]))
    out = {}
    for subj in dict.fromkeys(subjects):
        rows = [i for i, s in enumerate(subjects) if s == subj]
        p, t = p_all[rows], t_all[rows]
        out[subj] = {}
        for name, v in STRUCTURES:
            row = {"dice": float(metrics.dice(p, t, v)), "sens": float(metrics.sensitivity(p, t, v)),
                   "prec": float(metrics.precision(p, t, v))}
            if surfaces:
                d = [metrics.average_symmetric_surface_distance(p[k] == v, t[k] == v) if (p[k] == v).any() else diag
                     for k in range(len(rows)) if (t[k] == v).any()]
                row["asd"] = float(np.mean(np.minimum(d, diag))) if d else None
            out[subj][name] = row
    return out


def mean_dice(scores: dict) -> float:
    """Mean over subjects of the mean foreground Dice (the validation score)."""
    return float(np.mean([np.mean([r["dice"] for r in s.values()]) for s in scores.values()]))


# ---------------------------------------------------------------- the record

def plateau_change(history: dict) -> float | None:
    """Validation Dice at the last check minus at the last check at or before 4/5 of the steps run
    (how much the last fifth of training moved it), in Dice fractions; ``None`` without such a check."""
    steps, val = history["step"], history["val"]
    early = [i for i, s in enumerate(steps) if s <= 0.8 * history["steps_run"]]
    if not early or early[-1] == len(steps) - 1:
        return None
    return float(val[-1] - val[early[-1]])


def set_size(set_name: str) -> str:
    """The size class of a labelled set: ``"large"`` for the large set, ``"small"`` for a draw."""
    return "large" if set_name == "large" else "small"


def _flags(runs: list[dict]) -> dict[str, list[str]]:
    """``{cell: [reasons]}`` for runs still moving at the end or far below their peers."""
    out = {}
    finals = {_cell(r): r["history"]["val"][-1] for r in runs}
    for r in runs:
        why = []
        pc = plateau_change(r["history"])
        if pc is not None and abs(pc) >= FLAG_MOVING:
            why.append(f"validation Dice moved {100 * pc:+.1f} points over the last fifth")
        others = [v for k, v in finals.items() if k != _cell(r)]
        if others and finals[_cell(r)] < np.median(others) - FLAG_BELOW:
            why.append(f"final validation Dice {100 * finals[_cell(r)]:.1f} is more than {100 * FLAG_BELOW:.0f} "
                       f"points below its peers' median {100 * np.median(others):.1f}")
        if why:
            out[_cell(r)] = why
    return out


def _cell(r: dict) -> str:
    return f"{r['set']}_{r['method']}_s{r['seed']}"


def _average(row: dict, k: str) -> float | None:
    vals = [r[k] for r in row.values() if r.get(k) is not None]
    return float(np.mean(vals)) if vals else None


def _subject_means(runs: list[dict], key: str = "test") -> dict:
    """Per subject and structure, each metric averaged over the runs (replicates)."""
    out = {}
    for subj in runs[0][key]:
        out[subj] = {}
        for name, _ in STRUCTURES:
            row = {}
            for k in METRICS:
                vals = [r[key][subj][name].get(k) for r in runs if r[key][subj][name].get(k) is not None]
                row[k] = float(np.mean(vals)) if vals else None
            out[subj][name] = row
    return out


def _difference(runs_a: list[dict], runs_b: list[dict], subjects: list[str], value, key: str = "test") -> dict | None:
    """``value(a) - value(b)`` over subjects x paired replicates, with its crossed t-interval."""
    b_by = {(r["set"], r["seed"]): r for r in runs_b}
    pairs = [(ra, b_by[(ra["set"], ra["seed"])]) for ra in runs_a if (ra["set"], ra["seed"]) in b_by]
    if not pairs:
        return None
    d = np.array([[value(ra[key][s]) - value(rb[key][s]) for ra, rb in pairs] for s in subjects], float)
    # small sets: a labelled draw is the cluster; the large set has one, so its seeds are
    clusters = [ra["set"] if ra["set"] != "large" else f"s{ra['seed']}" for ra, _ in pairs]
    res = crossed_interval(100 * d, clusters, bootstrap=True)     # the rule's first interval beside it
    if res is not None:
        res["pairs"] = [_cell(ra) for ra, _ in pairs]
        # each paired run's difference over subjects, by cluster (chapter 4's Figure 4.3)
        res["pair_means"] = {}
        for c, v in zip(clusters, 100 * d.mean(axis=0)):
            res["pair_means"].setdefault(c, []).append(float(v))
        # a per-structure difference is a finding only if every draw gives it the same sign (chapter 4)
        means = res["cluster_means"].values()
        res["same_sign"] = len(means) > 1 and (all(v > 0 for v in means) or all(v < 0 for v in means))
    return res


def _block(cells: list[dict], key: str = "test") -> tuple[dict, dict]:
    """``(results, differences)`` per set size from cells carrying ``key`` scores."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for c in cells:
        groups.setdefault(set_size(c["set"]), {}).setdefault(c["method"], []).append(c)
    results, diffs = {}, {}
    for size in [s for s in ("small", "large") if s in groups]:
        block = {}
        for m in [m for m in FEWSHOT_METHODS if m in groups[size]]:
            runs = sorted(groups[size][m], key=lambda c: (c["set"], c["seed"]))
            table = _subject_means(runs, key)
            block[m] = {
                "replicates": [_cell(r) for r in runs],
                "n_subjects_labelled": len(runs[0]["subjects"]),
                "structures": {name: {k: summary([table[s][name][k] for s in table if table[s][name][k] is not None])
                                      for k in METRICS} for name, _ in STRUCTURES},
                "average": {k: summary([a for a in (_average(table[s], k) for s in table) if a is not None])
                            for k in METRICS},
                "per_subject": {s: {"average_dice": _average(table[s], "dice"),
                                    **{name: table[s][name] for name, _ in STRUCTURES}} for s in table},
                "per_replicate": {_cell(r): float(np.mean([_average(r[key][s], "dice") for s in r[key]]))
                                  for r in runs},
            }
            if key == "test":
                block[m].update(
                    runs=[{"cell": _cell(r), "steps": r["steps"], "final_val_dice": r["history"]["val"][-1],
                           "plateau_change": plateau_change(r["history"]),
                           "n_train_images": r["n_train_images"]} for r in runs],
                    flags=_flags(runs))
        results[size] = block
        diffs[size] = {}
        subjects = sorted(next(iter(block.values()))["per_subject"])
        for a, b in COMPARISONS:
            if a in block and b in block:
                ga, gb = groups[size][a], groups[size][b]
                row = {"average": _difference(ga, gb, subjects, lambda sc: _average(sc, "dice"), key)}
                for name, _ in STRUCTURES:
                    row[name] = _difference(ga, gb, subjects, lambda sc, n=name: sc[n]["dice"], key)
                diffs[size][f"{a}_vs_{b}"] = row
    return results, diffs


def summarise(cells: list[dict], info: dict, external: dict | None = None) -> dict:
    """The recorded result: per set size and method, scores over test subjects (replicates averaged
    per subject first), flags, each cell's record (its learning curve under ``history``), paired
    differences with crossed t-intervals, the verdict by the stated rule, the Markdown, and the
    external test set's table when given."""
    results, diffs = _block(cells)
    result = {"task": "fewshot_segmentation", **info, "results": results, "dice_difference": diffs,
              "n_cells": len(cells),
              # every cell's own record but its weights (its wall time is under "wall_s"), so the committed
              # record alone rebuilds the table: restore_cells writes them back into a lost run folder
              "cells": {_cell(c): {k: v for k, v in c.items() if k != "wall_s"} for c in cells},
              "restored": sorted(_cell(c) for c in cells if c.get("restored")) + sorted(
                  f"pilot_{size}_{p['method']}" for size, ps in info.get("pilot", {}).items() for p in ps
                  if p.get("restored")),
              # compute spent (cells, copies, pilot): timings, which save_results files under provenance
              "wall_s": {_cell(c): c["wall_s"] for c in cells},
              # the U-Net's memory layout (cells trained before it became channels-last on CPU have none)
              "layout": {_cell(c): c.get("layout", "contiguous_format") for c in cells},
              "wall_time_s": round(sum(c["wall_s"] for c in cells) + info.get("seconds", {}).get("pilot", 0.0)
                                   + sum(info.get("cache", {}).get("seconds", {}).values()), 1)}
    done = {_cell(c) for c in cells}
    result["missing"] = [c for c in info.get("planned", []) if c not in done]
    result["complete"] = not result["missing"]
    result["decisions"] = decisions(result)
    result["verdict"] = verdict_lines(result)
    if external:
        ext_cells = [{**c, "external": external[_cell(c)]} for c in cells if _cell(c) in external]
        if ext_cells:
            er, ed = _block(ext_cells, "external")
            result["external"] = {"results": er, "dice_difference": ed}
    result["markdown"] = fewshot_markdown(result)
    return result


def n_labelled(result: dict, size: str) -> int | None:
    """Labelled subjects of a record's set size (``"small"``/``"large"``); None if it has no runs."""
    block = result["results"].get(size, {})
    return next(iter(block.values()))["n_subjects_labelled"] if block else None


def decisions(result: dict) -> list[dict]:
    """The rule applied to DRDM - BigAug and DRDM - none at each set size the paper reports: each
    ``decision`` is the rule's word, ``"not compared"`` (no paired cells, or no paper figure), or
    ``"not decided"`` while the pairs come from one labelled draw (at 20 subjects, one training seed)."""
    out = []
    claim = _claim(result)
    arms = {(size, m) for size, m, _ in result.get("protocol", {}).get("arms", ())}
    for size, rows in result["dice_difference"].items():
        n = n_labelled(result, size)
        for a, b in VERDICT_COMPARISONS:
            if arms and any((size, m) not in arms and m not in result.get("skipped", {}) for m in (a, b)):
                continue                                             # not a comparison this protocol makes
            paper = PAPER.get(n, {}) if claim else {}
            ref = paper[a] - paper[b] if a in paper and b in paper else None
            d = rows.get(f"{a}_vs_{b}", {}).get("average")
            why = None
            if d is None:
                skipped = result.get("skipped", {})
                why = skipped.get(a) or skipped.get(b) or "no finished cells for both methods"
            decision = decide(d, ref) if d is not None and ref is not None else "not compared"
            if decision == "not decided":
                why = (f"one {'training seed' if size == 'large' else 'labelled draw'} so far, so the interval "
                       "is over test subjects alone and cannot see a redraw")
            out.append({"size": size, "labelled": n, "a": a, "b": b, "paper": ref, "diff": d,
                        "decision": decision, "why": why})
    return out


def verdict_lines(result: dict) -> list[str]:
    """One sentence per decision, in words, with the interval and the detectable difference."""
    lines = []
    if not result.get("complete", True):
        n_done = len(result.get("planned", [])) - len(result["missing"])
        lines.append(f"**Partial record**: {n_done} of {len(result.get('planned', []))} planned cells are finished; "
                     "the lines below apply the rule to them and are not the experiment's verdict.")
    for dec in result["decisions"]:
        label = f"{_count(dec['labelled'], 'labelled subject')}, {_label(result, dec['a'])} minus {_label(result, dec['b'])}"
        d = dec["diff"]
        if d is None:
            lines.append(f"{label}: not compared ({dec['why']}).")
            continue
        plan = _planned(result, dec["size"], dec["a"], dec["b"]) or (None, None)
        runs = _count(d["replicates"], "paired run")
        if plan[1] is not None and d["replicates"] < plan[1]:
            runs = f"{d['replicates']} of the {plan[1]} planned paired runs"
        head = (f"{label}: {d['mean']:+.1f} Dice points, 95 % interval [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}] over "
                f"{d['n']} test subjects and {runs} ({_units(dec['size'], d, plan[0])})")
        if dec["paper"] is None:
            lines.append(head + ("; the paper reports no such difference." if _claim(result)
                                 else ": measured on phantoms, no verdict on the paper's claim (that is about ACDC)."))
            continue
        if dec["decision"] == "not decided":
            lines.append(f"{head}: **not decided yet**: {dec['why']}.")
            continue
        word = {"reproduced": "**reproduced**: the interval lies above 0",
                "contradicted": f"**contradicted**: the interval lies below the paper's {dec['paper']:+.1f}",
                "inconclusive": f"**inconclusive**: the interval holds 0 and the paper's {dec['paper']:+.1f}; "
                                f"the smallest difference these data would detect (80 % power) is "
                                f"{d['mdd']:.1f} points"}[dec["decision"]]
        extra = ""
        if dec["decision"] == "reproduced" and d["ci"][1] < dec["paper"]:
            extra = f", though below the paper's {dec['paper']:+.1f}"
        lines.append(f"{head}: {word}{extra}.")
    return lines


def _claim(result: dict) -> bool:
    """Whether the record judges the paper's claim (``False``: phantoms, differences only)."""
    return result.get("protocol", {}).get("claim", True)


def _units(size: str, d: dict, planned: int | None = None) -> str:
    """What an interval's clusters are (and how many of the ``planned``), and its degrees of freedom."""
    large = size == "large"
    noun = "training seed" if large else "labelled draw"
    unit = _count(d["clusters"], noun)
    if planned is not None and d["clusters"] < planned:
        unit = f"{d['clusters']} of the {planned} planned {noun}s"
    unit += " of one labelled set" if large else ""
    if "df" not in d:
        return unit
    out = f"{unit}, t on {d['df']:.1f} degrees of freedom"
    if d["clusters"] > 1 and (d.get("components") or {}).get("between_clusters") == 0:
        out += "; their variance estimated at 0, so the interval is in effect over subjects alone"
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _planned(result: dict, size: str, a: str, b: str) -> tuple[int, int] | None:
    """``(clusters, paired runs)`` the protocol plans for the difference ``a - b`` at ``size``: labelled
    draws (at 20 subjects, training seeds) and draw x seed pairs; None where the record has no protocol
    arms for both."""
    prot = result.get("protocol", {})
    seeds = {m: n for s, m, n in prot.get("arms", ()) if s == size}
    if a not in seeds or b not in seeds:
        return None
    both = min(seeds[a], seeds[b])
    return (both, both) if size == "large" else (prot.get("draws", 1), prot.get("draws", 1) * both)


def _ci(d: dict | None, mark: bool = False, planned: tuple[int, int] | None = None) -> str:
    """``mean [lo, hi]``; with ``mark``, ✓ where every labelled draw gives the difference one sign,
    and, with ``planned`` (:func:`_planned`), all the protocol's paired runs are in (fewer cannot
    show a finding)."""
    if d is None:
        return "–"
    whole = planned is None or (d.get("clusters", 0) >= planned[0] and d.get("replicates", 0) >= planned[1])
    tick = " ✓" if mark and whole and d.get("same_sign") else ""
    return f"{d['mean']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]{tick}"


def _label(result: dict, m: str) -> str:
    """A method's name in this record's tables (DRDM's with the record's dose)."""
    return result.get("labels", {}).get(m) or METHOD_LABELS[m]


def _score_table(result: dict, results: dict, title: str) -> list[str]:
    cols = [n for n, _ in STRUCTURES] + ["Average"]
    head = "| labelled | method | runs | " + " | ".join(f"{c} Dice | {c} sens | {c} prec | {c} ASD" for c in cols) + " |"
    lines = [title, "", head, "|" + "---|" * (3 + 4 * len(cols))]
    for size, block in results.items():
        for m, res in block.items():
            cells = []
            for c in cols:
                src = res["average"] if c == "Average" else res["structures"][c]
                cells += [f"{100 * src[k]['mean']:.1f}" if src[k]["mean"] is not None else "–"
                          for k in ("dice", "sens", "prec")]
                cells.append(f"{src['asd']['mean']:.2f}" if src["asd"]["mean"] is not None else "–")
            lines.append(f"| {res['n_subjects_labelled']} | {_label(result, m)} | {len(res['replicates'])} | "
                         + " | ".join(cells) + " |")
    return lines


def _diff_table(result: dict, diffs: dict) -> list[str]:
    cols = [n for n, _ in STRUCTURES] + ["Average"]
    out = ["| labelled | comparison | " + " | ".join(cols) + " | Average's t df | Average's detectable (80 %) |",
           "|" + "---|" * (4 + len(cols))]
    for size, rows in diffs.items():
        n = n_labelled(result, size)
        for name, row in rows.items():
            a, b = name.split("_vs_")
            avg = row["average"]
            mdd = "–" if avg is None else f"{avg['mdd']:.1f}"
            df = "–" if avg is None or "df" not in avg else f"{avg['df']:.1f}"
            planned = _planned(result, size, a, b)
            out.append(f"| {n} | {_label(result, a)} - {_label(result, b)} | "
                       + " | ".join(_ci(avg if c == "Average" else row[c], mark=True, planned=planned)
                                    for c in cols)
                       + f" | {df} | {mdd} |")
    return out


def fewshot_markdown(result: dict) -> str:
    """The recorded tables: scores, differences with intervals, runs and flags, verdict."""
    out = _score_table(result, result["results"], "Test subjects' scores (%; ASD in pixels of the protocol grid): mean over "
                                          "test subjects, each subject's score averaged over its runs first")
    out += ["", "Dice differences (points), 95 % crossed t-intervals (test subjects x labelled draws; at 20 subjects x "
            "training seeds), each on its own degrees of freedom (the last columns give the Average's); ✓: all the "
            "protocol's paired runs are in and each labelled draw (at 20 subjects, training seed) gives the "
            "difference the same sign", "",
            *_diff_table(result, result["dice_difference"])]
    runs = ["| labelled | cell | steps | final val Dice | val change, last fifth | training images | flag |",
            "|---|---|---|---|---|---|---|"]
    for size, block in result["results"].items():
        for m, res in block.items():
            for r in res["runs"]:
                pc = r["plateau_change"]
                flag = "; ".join(res["flags"].get(r["cell"], [])) or "–"
                runs.append(f"| {res['n_subjects_labelled']} | {r['cell']} | {r['steps']} | "
                            f"{100 * r['final_val_dice']:.1f} | {'–' if pc is None else f'{100 * pc:+.1f}'} | "
                            f"{r['n_train_images']} | {flag} |")
    out += ["", "Runs (validation subjects; every run trains to its budget and its final weights are tested)", "",
            *runs, "", ("Verdict (rule stated in chapter 4 before the numbers):" if _claim(result)
                        else "Differences (phantoms: no verdict on the paper's claim):"), "",
            *[f"- {v}" for v in result["verdict"]]]
    if result.get("external"):
        out += ["", *_score_table(result, result["external"]["results"], "External test set (the same trained models, "
                                                                 "no retraining)"),
                "", "Dice differences on the external test set (points; intervals and ✓ as above, over the cells "
                    "whose weights the run folder keeps)", "",
                *_diff_table(result, result["external"]["dice_difference"])]
    if result.get("skipped"):
        out += [""] + [f"Skipped {m}: {why}" for m, why in result["skipped"].items()]
    if result.get("restored"):
        out += ["", f"Restored from a saved record (`--restore`), not trained in this run's folder and without their "
                    f"weights (so not scored on an external test set): {', '.join(result['restored'])}"]
    return "\n".join(out)


def copies_figure(records, split: dict, prot, net=None, *, n: int = 2, device="cpu"):
    """The record's panel of copies: the middle ED slice of the first labelled draw's first subject, and ``n``
    copies per augmentation method (:func:`drdm.tasks.augcache.panel_copies` on ``device``; the DRDM methods
    only with ``net``), on the protocol's grid, each DRDM copy titled with its T'. ``records``: the run's
    :class:`drdm.data.Record` list; ``split``: the record's (``split["sets"]``). Returns the matplotlib figure."""
    from ..data.crops import prepare_slices
    from ..viz import plot_copies
    from .augcache import panel_copies
    subject = next(iter(split["sets"].values()))[0]
    items = prepare_slices([r for r in records if r.subject == subject and r.phase == "ED"], crop=prot.crop,
                           size=prot.size, percentiles=prot.percentiles)
    if not items:
        raise ValueError(f"subject {subject} has no labelled ED slice in these records")
    example = items[len(items) // 2]
    methods = [m for m in FEWSHOT_METHODS if m != "none" and (net is not None or not m.startswith("drdm"))]
    names = {m: [f"{prot.label(m)}\nT' {t}" for t in prot.levels(m)[:n]] if m.startswith("drdm") else prot.label(m)
             for m in methods}
    return plot_copies(panel_copies(example, prot, methods, net=net, n=n, device=device), names=names,
                       title=f"{example.name} (subject, phase, slice) and {n} copies per method")
