"""The few-shot segmentation pipeline (drdm.tasks.fewshot, fewshot_report, augcache, drdm.data.crops):
slices, the stratified split, the release schedule, the pilot budget, cached copies, training to the
budget with the final weights tested, resumption, the external test set, flags and the CLI.

Expected values are worked out here from the protocol's stated rules (by hand or with numpy), not
taken from the code under test.
"""
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from drdm.data import ACDC_CONVENTION, Record
from drdm.data.crops import prepare_slices
from drdm.files import atomic_write
from drdm.phantoms import phantom_records
from drdm.tasks import fewshot as FS
from drdm.tasks import fewshot_report as FR
from drdm.tasks import augcache
from drdm.tasks.fewshot_cells import ledger_path, restore_cells
from drdm.tasks.augcache import AugCache

pytestmark = pytest.mark.usefixtures("one_thread")

CI = FS.PROTOCOLS["ci"]
RUN = dict(checkpoint="phantom2d", device="cpu", progress=False)


def _records(n=8, seed=0, size=48):
    """2-D cardiac phantoms, ED and ES, all of group "?" (the ci protocol needs 6 subjects per group)."""
    return phantom_records("cardiac", n, size, seed, phases=("ED", "ES"))


def _slices(records, prot=CI):
    return prepare_slices(records, crop=prot.crop, size=prot.size, percentiles=prot.percentiles)


def _dice(p: np.ndarray, t: np.ndarray, v: int) -> float:
    """Dice of label ``v`` pooled over all given slices; 1 when both are empty."""
    a, b = p == v, t == v
    den = a.sum() + b.sum()
    return 1.0 if den == 0 else 2.0 * (a & b).sum() / den


def _predict(weights: Path, prot, slices) -> np.ndarray:
    """Label maps from a cell's saved weights, by hand: a fresh U-Net, the arg-max of its logits."""
    from drdm.tasks.unet import UNet
    model = UNet(2, 1, 4, prot.features, prot.norm)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    x = torch.from_numpy(np.stack([s.image for s in slices]))[:, None]
    with torch.no_grad():
        return model(x).argmax(1).numpy()


def _scores_by_hand(weights: Path, prot, slices, subjects) -> dict:
    """``{subject: {structure: Dice}}`` of the saved weights, each subject's slices pooled."""
    pred = _predict(weights, prot, slices)
    out = {}
    for subj in subjects:
        rows = [i for i, s in enumerate(slices) if s.subject == subj]
        ref = np.stack([slices[i].label for i in rows])
        out[subj] = {name: _dice(pred[rows], ref, v) for name, v in FS.STRUCTURES}
    return out


def _write_pairs(folder, n_subjects=6):
    """A folder of X.nii.gz / X_gt.nii.gz 3-D cardiac phantom volumes (2 slices each)."""
    import nibabel as nib
    from drdm.phantoms import cardiac_phantom
    folder.mkdir()
    for k in range(n_subjects):
        i0, l0 = cardiac_phantom(70 + k, 40)
        i1, l1 = cardiac_phantom(70 + k, 40, "ES")
        aff = np.diag([1.5, 1.5, 8.0, 1.0])
        nib.save(nib.Nifti1Image(np.stack([i0, i1], -1).astype(np.float32), aff), folder / f"s{k}.nii.gz")
        nib.save(nib.Nifti1Image(np.stack([l0, l1], -1).astype(np.int16), aff), folder / f"s{k}_gt.nii.gz")


def _cells(cell_dir: Path) -> list[Path]:
    """The cells' records (not the pilots')."""
    return sorted(p for p in cell_dir.glob("*.json") if not p.stem.startswith("pilot_"))


def _stamps(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """One uninterrupted ci run on 8 phantom subjects (pilots, 7 cells, DRDM at the low dose)."""
    records = _records()
    work = tmp_path_factory.mktemp("whole")
    result = FS.run_fewshot(records, "ci", work_dir=work, **RUN)
    return {"records": records, "work": work, "result": result,
            "cell_dir": work / "cells" / result["run_key"]}


# ---------------------------------------------------------------- slices and split

def test_prepare_slices_crops_around_the_centre_resizes_and_normalises():
    img = np.zeros((40, 60), np.float32)
    img[:, :] = np.linspace(0, 1000, 60)[None]
    lab = np.zeros((40, 60), np.int64)
    lab[18:22, 28:32] = 3                         # a 4-pixel square at the centre
    lab[19:21, 10:12] = 1                         # outside the centre crop of 32: cut away
    rec = Record(img, lab, (1.0, 1.0), np.eye(4), "s0", "ED", "test", ACDC_CONVENTION, "", {"vendor": "A"})
    (s,) = prepare_slices([rec], crop=32, size=16)
    assert s.image.shape == (16, 16) and s.label.shape == (16, 16) and s.image.dtype == np.float32
    assert 0 <= s.image.min() and s.image.max() <= 1
    assert set(np.unique(s.label)) == {0, 3}      # the off-centre label lies outside the crop
    ys, xs = np.nonzero(s.label == 3)
    assert ys.mean() == pytest.approx(7.5, abs=0.6) and xs.mean() == pytest.approx(7.5, abs=0.6)
    # a structure two pixels wide still exists after halving the grid (one-hot resize, not decimation)
    assert (s.label == 3).sum() >= 4
    assert (s.group, s.phase, s.index, s.name) == ("A", "ED", 0, "s0_ED_00")      # the vendor is the group
    # padding: a 20 x 20 slice is padded to 32 around its centre; no group: "?"
    small = Record(np.ones((20, 20), np.float32), np.pad(np.ones((2, 2), np.int64) * 2, 9),
                   (1.0, 1.0), np.eye(4), "s1", "ED", "test", ACDC_CONVENTION, "", {})
    (p,) = prepare_slices([small], crop=32, size=32)
    ys, xs = np.nonzero(p.label == 2)
    assert (ys.min(), xs.min()) == (15, 15) and p.group == "?"
    # a diagnosis group wins over the vendor; a slice without foreground is dropped
    both = dataclasses.replace(rec, meta={"group": "DCM", "vendor": "A"})
    empty = dataclasses.replace(rec, subject="s2", label=np.zeros_like(lab))
    assert [s.group for s in prepare_slices([both, empty], crop=32, size=16)] == ["DCM"]


def test_split_slices_is_stratified_disjoint_and_nests_the_labelled_sets():
    # three groups of unequal size; 7 subjects per group are needed (1 test, 1 val, 2 draws of 2, 1 extra)
    prot = dataclasses.replace(CI, n_test=1, n_val=1, draws=2, per_draw=2, extra=1)
    sizes = {"DCM": 7, "NOR": 8, "RV": 10}
    records, k = [], 0
    for g, n in sizes.items():
        for r in _records(n, seed=100 * k, size=32):
            records.append(dataclasses.replace(r, meta={"group": g}))
        k += 1
    slices = _slices(records, prot)
    group = {s.subject: s.group for s in slices}
    sp = FS.split_slices(slices, prot)
    test, val, pool = set(sp["test"]), set(sp["val"]), set(sp["pool"])
    assert not (test & val or test & pool or val & pool)
    assert test | val | pool == set(group) and len(group) == sum(sizes.values())
    for name, per in (("test", prot.n_test), ("val", prot.n_val)):
        assert sorted(group[s] for s in sp[name]) == sorted(g for g in sizes for _ in range(per))
    assert sorted(sp["sets"]) == ["d0", "d1", "large"]
    draws = [set(sp["sets"][f"d{i}"]) for i in range(prot.draws)]
    assert not draws[0] & draws[1] and all(d <= pool for d in draws)
    for d in draws:                                   # per_draw subjects of every group
        assert sorted(group[s] for s in d) == sorted(g for g in sizes for _ in range(prot.per_draw))
    large = set(sp["sets"]["large"])
    assert draws[0] | draws[1] <= large <= pool
    for g in sizes:                                   # the draws plus `extra` more of each group
        assert sum(group[s] == g for s in large) == prot.draws * prot.per_draw + prot.extra
    # every subject has exactly one role; the bigger groups' remainder stays in the pool, unlabelled
    assert len(pool - large) == sum(n - 7 for n in sizes.values())
    # both phases of a subject go where the subject goes (the split is by subject)
    assert {s.phase for s in slices if s.subject in test} == {"ED", "ES"}
    # reproducible, and the split seed matters
    assert FS.split_slices(slices, prot) == sp
    assert FS.split_slices(slices, dataclasses.replace(prot, split_seed=1)) != sp
    with pytest.raises(ValueError, match="fewer than"):
        FS.split_slices(slices, dataclasses.replace(prot, extra=2))      # DCM has only 7


def test_mnms_split_keeps_both_vendors_in_every_role():
    from drdm.data import load_mnms
    from drdm.shared import absent_reason, mnms_dir
    if mnms_dir() is None:
        pytest.skip(absent_reason("the M&Ms subset"))
    prot = FS.PROTOCOLS["cpu"]
    slices = _slices(load_mnms(mnms_dir()), prot)
    # no labelled slice is lost to the crop and resize (the subset has 330 labelled slices)
    assert len(slices) == 330
    vendor = {s.subject: s.group for s in slices}
    sp = FS.split_slices(slices, prot)
    assert sorted(vendor[s] for s in sp["test"]) == ["A"] * prot.n_test + ["B"] * prot.n_test
    assert all(sorted(vendor[s] for s in d) == ["A", "B"] for k, d in sp["sets"].items() if k != "large")
    assert not set(sp["test"]) & set(sp["sets"]["large"] + sp["val"])


# ---------------------------------------------------------------- the release's dose and the budget

def test_release_levels_follow_the_release_schedule():
    full = FS.release_levels(32)
    # the script's copy i recovers from 48 + 2 * ((i + 1) // 2): 48, 50, 50, 52, 52, ..., 78, 78, 80
    assert full == tuple([48] + [t for t in range(50, 80, 2) for _ in range(2)] + [80])
    assert np.mean(full) == 64
    eight = FS.release_levels(8)
    assert len(eight) == 8 and np.mean(eight) == 64 and len(set(eight)) == 8
    assert list(eight) == sorted(eight) and set(eight) <= set(full)
    for n in range(1, 33):
        levels = FS.release_levels(n)
        assert len(levels) == n and set(levels) <= set(full)
        assert abs(np.mean(levels) - 64) <= 1                     # spread over the whole schedule
    for bad in (0, 33):
        with pytest.raises(ValueError, match="1 to 32"):
            FS.release_levels(bad)
    # drdm takes the schedule at n_aug copies; drdm_low the protocol's low levels
    assert CI.levels("drdm") == FS.release_levels(CI.n_aug) and CI.levels("drdm_low") == CI.low_levels


def test_pilot_budget_on_hand_made_curves():
    steps = [100, 200, 300, 400, 500, 600, 700, 800]
    rising = {"step": steps, "val": [.20, .50, .70, .80, .83, .84, .84, .84]}
    # smoothed (mean of the last 3 checks): .20 .35 .47 .67 .78 .82 .84 .84; max .84, first >= .83 at 700
    assert FS.pilot_budget([rising], multiple=100, minimum=100) == 700
    assert FS.pilot_budget([rising], tolerance=0.05, multiple=100, minimum=100) == 600       # .82 >= .79
    assert FS.pilot_budget([rising], multiple=500, minimum=100) == 1000                     # rounded up
    assert FS.pilot_budget([rising], multiple=100, minimum=2000) == 2000                    # at least
    # one early spike is smoothed away: unsmoothed, its max would give 200
    spike = {"step": steps, "val": [.10, .90, .10, .50, .60, .60, .60, .60]}
    assert FS.pilot_budget([spike], multiple=100, minimum=100) == 700
    # two pilots are averaged first: a fast and a slow curve plateau at the slow one's pace
    fast = {"step": steps, "val": [.80] * 8}
    slow = {"step": steps, "val": [.0, .2, .4, .6, .8, .8, .8, .8]}
    # mean .4 .5 .6 .7 .8 .8 .8 .8 -> smoothed .4 .45 .5 .6 .7 .77 .8 .8: first >= .79 at 700
    assert FS.pilot_budget([fast, slow], multiple=100, minimum=100) == 700
    assert FS.pilot_budget([fast], multiple=100, minimum=100) == 100


# ---------------------------------------------------------------- training

def test_train_segmenter_keeps_the_final_weights_and_trains_every_step():
    from drdm.tasks.unet import train_segmenter
    x = torch.rand(4, 1, 16, 16)
    y = (x > 0.5).long()
    scores = iter([0.1, 0.9, 0.3, 0.2, 0.4])
    seen = []

    def validate(model):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    m = train_segmenter(x, y, n_classes=2, steps=22, batch=2, features=(4, 8), validate=validate,
                        eval_every=5)
    h = m.history
    assert h["step"] == [5, 10, 15, 20, 22] and h["steps_run"] == 22    # every interval and the last step
    assert h["best_step"] == 10 and h["best_val"] == 0.9 and h["val"][-1] == 0.4     # the curve, recorded
    assert len(h["train_loss"]) == 5 and all(np.isfinite(h["train_loss"]))
    assert all(torch.equal(v, seen[-1][k]) for k, v in m.state_dict().items())          # the final weights
    assert not all(torch.equal(v, seen[1][k]) for k, v in m.state_dict().items())      # not the best ones


def test_train_segmenter_in_channels_last_does_the_same_arithmetic(monkeypatch):
    """On CPU the 2-D U-Net trains channels-last (faster); the weights after a few Adam steps and
    the predicted labels are those of the default layout up to summation order. (Without norms: a
    convolution's bias before a batch norm has a zero gradient, whose rounding noise Adam scales to
    a full step in either layout.)"""
    from drdm.tasks import unet
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    y = (x * 3).long().clamp(max=2)
    kw = dict(n_classes=3, steps=4, batch=3, features=(4, 8), norm=None, seed=1)
    fast = unet.train_segmenter(x, y, **kw)
    assert fast.down[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(unet, "memory_format", lambda device, ndim: torch.contiguous_format)
    plain = unet.train_segmenter(x, y, **kw)
    assert not plain.down[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    for (name, a), b in zip(fast.state_dict().items(), plain.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    assert (unet.predict(fast, x) == unet.predict(plain, x)).float().mean() > 0.999


# ---------------------------------------------------------------- cached copies

def test_a_changed_checkpoint_regenerates_only_the_drdm_copies(tmp_path, capsys):
    from drdm.checkpoint import load, load_checkpoint, resolve
    from drdm.outputs import sha256_file
    prot = CI
    items = _slices(_records(1, seed=1000, size=32), prot)
    assert len(items) == 2
    net = load("phantom2d")
    sha = sha256_file(resolve("phantom2d"))
    cache = AugCache(tmp_path / "aug")
    first = augcache.copies(cache, "drdm_low", items, prot, net=net, checkpoint_sha256=sha, progress=False)
    augcache.copies(cache, "bigaug", items, prot, progress=False)
    assert (cache.hits, cache.misses) == (0, 2 * len(items))
    again = augcache.copies(cache, "drdm_low", items, prot, net=net, checkpoint_sha256=sha, progress=False)
    assert cache.hits == len(items) and cache.misses == 2 * len(items)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert all(c[0].shape == (prot.n_aug, 1, 32, 32) and c[1].shape == (prot.n_aug, 1, 32, 32) for c in first)
    # the same checkpoint with one weight changed: a new sha256
    obj = load_checkpoint(resolve("phantom2d"))
    name = next(iter(obj["model"]))
    obj["model"][name] = obj["model"][name] + 0.01
    other = tmp_path / "other.pth"
    torch.save(obj, other)
    net2, sha2, why = augcache.drdm_identity(other)
    assert why is None and sha2 != sha
    augcache.copies(cache, "drdm_low", items, prot, net=net2, checkpoint_sha256=sha2, progress=True)
    assert cache.misses == 3 * len(items)          # regenerated
    assert "augment drdm_low" in capsys.readouterr().err     # the arm, not its augmenter, names the bar
    augcache.copies(cache, "bigaug", items, prot, progress=False)
    assert cache.misses == 3 * len(items)          # BigAug's copies do not depend on the checkpoint
    assert len(list((tmp_path / "aug" / "drdm").glob("*.pt"))) == 2 * len(items)
    assert len(list((tmp_path / "aug" / "bigaug").glob("*.pt"))) == len(items)
    # other pixels under the same slice name: made again, not served stale
    changed = [dataclasses.replace(items[0], image=np.flipud(items[0].image).copy())] + items[1:]
    augcache.copies(cache, "bigaug", changed, prot, progress=False)
    assert cache.misses == 3 * len(items) + 1


def test_the_large_set_makes_copies_only_for_its_extra_subjects(tmp_path, monkeypatch):
    # fixed budgets (no pilot), so only the cells make copies: both DRDM and BigAug at both sizes
    prot = dataclasses.replace(CI, budget={"small": 8, "large": 8},
                               arms=(("small", "bigaug", 1), ("small", "drdm_low", 1),
                                     ("large", "bigaug", 1), ("large", "drdm_low", 1)))
    records = _records(6)
    calls = []
    real = augcache.make_copies

    def counting(method, image, *a, **k):
        calls.append(method)
        return real(method, image, *a, **k)

    monkeypatch.setattr(augcache, "make_copies", counting)
    aug = tmp_path / "aug"

    def made():
        """{method folder: {subject: files}} of the cached copies."""
        out = {}
        for p in aug.rglob("*.pt"):
            out.setdefault(p.parent.name, {}).setdefault(p.name.split("_")[0], []).append(p.name)
        return out

    kw = dict(methods=("bigaug", "drdm_low"), **RUN)
    first = FS.run_fewshot(records, prot, work_dir=tmp_path, stop_after=4, **kw)   # the four small cells
    sets = first["split"]["sets"]
    per_subject = 2                                    # ED and ES, one slice each
    drawn = set(sets["d0"]) | set(sets["d1"])
    extra = set(sets["large"]) - drawn
    assert first["n_cells"] == 4 and len(extra) == CI.extra and drawn < set(sets["large"])
    assert sorted(calls) == sorted(["bigaug", "drdm"] * per_subject * len(drawn))
    assert {m: set(v) for m, v in made().items()} == {"bigaug": drawn, "drdm": drawn}
    stamps = _stamps(aug)

    calls.clear()
    second = FS.run_fewshot(records, prot, work_dir=tmp_path, **kw)                  # the large set's cells
    assert second["n_cells"] == 6
    assert sorted(calls) == sorted(["bigaug", "drdm"] * per_subject * len(extra))    # the extra subject only
    assert {m: set(v) for m, v in made().items()} == {"bigaug": set(sets["large"]), "drdm": set(sets["large"])}
    assert {k: v for k, v in _stamps(aug).items() if k in stamps} == stamps          # the draws' copies reused
    # the recorded count: n_aug copies of every slice of the large set, per method
    n_large = per_subject * len(sets["large"])
    assert second["cache"]["copies"] == {"bigaug": CI.n_aug * n_large, "drdm_low": CI.n_aug * n_large}


# ---------------------------------------------------------------- the report's flags

def test_plateau_change_measures_the_last_fifth():
    h = {"step": [100, 200, 300, 400, 500], "val": [0.5, 0.6, 0.7, 0.72, 0.73], "steps_run": 500}
    assert FR.plateau_change(h) == pytest.approx(0.73 - 0.72)      # last check at or before step 400
    assert FR.plateau_change({"step": [100, 200], "val": [0.1, 0.2], "steps_run": 200}) == pytest.approx(0.1)
    assert FR.plateau_change({"step": [100], "val": [0.1], "steps_run": 100}) is None


def _hand_cell(set_name, val, method="none", seed=0):
    """A finished cell's record, made by hand: 5 checks over 100 steps, two test subjects."""
    row = {"dice": 0.5, "sens": 0.5, "prec": 0.5, "asd": 1.0}
    return {"set": set_name, "method": method, "seed": seed, "subjects": ["a"], "steps": 100, "wall_s": 1.0,
            "n_train_images": 4, "n_labelled_slices": 2,
            "history": {"step": [20, 40, 60, 80, 100], "train_loss": [1.0] * 5, "val": list(val),
                        "best_step": 20, "best_val": max(val), "steps_run": 100},
            "test": {t: {name: dict(row) for name, _ in FS.STRUCTURES} for t in ("t1", "t2")}}


def _flags(cells):
    res = FR.summarise(cells, {})
    return {c: why for block in res["results"].values() for m in block.values() for c, why in m["flags"].items()}, res


def test_flags_fire_on_a_run_that_moves_or_ends_far_below_its_peers_and_not_otherwise():
    assert FR.FLAG_MOVING == 0.02 and FR.FLAG_BELOW == 0.10
    flat = [.5, .6, .7, .7, .7]
    # quiet: a change of 1.5 points over the last fifth, a final 8 points below the peers
    quiet = [_hand_cell("d0", flat), _hand_cell("d1", [.5, .6, .7, .685, .7]), _hand_cell("d2", [.5, .6, .62, .62, .62])]
    flags, _ = _flags(quiet)
    assert flags == {}
    # still rising by 4 points over the last fifth (its final is only 6 points below its peers)
    flags, res = _flags([_hand_cell("d0", flat), _hand_cell("d1", flat), _hand_cell("d2", [.3, .4, .5, .6, .64])])
    assert list(flags) == ["d2_none_s0"] and len(flags["d2_none_s0"]) == 1 and "+4.0" in flags["d2_none_s0"][0]
    assert "moved" in flags["d2_none_s0"][0] and "last fifth" in flags["d2_none_s0"][0]
    row = next(line for line in res["markdown"].splitlines() if "| d2_none_s0 |" in line)
    assert "moved +4.0 points" in row
    # falling counts as moving
    flags, _ = _flags([_hand_cell("d0", flat), _hand_cell("d1", flat), _hand_cell("d2", [.5, .6, .7, .7, .67])])
    assert list(flags) == ["d2_none_s0"] and "-3.0" in flags["d2_none_s0"][0]
    # flat, but 15 points below its peers' median
    flags, _ = _flags([_hand_cell("d0", flat), _hand_cell("d1", flat), _hand_cell("d2", [.5, .55, .55, .55, .55])])
    assert list(flags) == ["d2_none_s0"] and "below its peers' median 70.0" in flags["d2_none_s0"][0]
    # peers are runs of the same method and set size: a lone BigAug run far below the others is no one's peer
    flags, _ = _flags(quiet + [_hand_cell("d0", [.1, .2, .3, .3, .3], method="bigaug"),
                               _hand_cell("large", [.5, .9, .9, .9, .9])])
    assert flags == {}


def _scored_cell(set_name, method, dice):
    """A hand-made cell of 5 labelled subjects (the paper's Table 2 row) whose two test subjects score
    ``dice`` in every structure."""
    c = _hand_cell(set_name, [.5, .6, .7, .7, .7], method=method)
    c["subjects"] = [f"p{i}" for i in range(5)]
    for t, v in zip(("t1", "t2"), dice):
        for name, _ in FS.STRUCTURES:
            c["test"][t][name]["dice"] = v
    return c


def test_the_rule_waits_for_a_second_draw_before_it_decides():
    """Pairs from one labelled draw give an interval over test subjects alone: the record then says
    "not decided" however clear that interval is, and decides once a second draw is in."""
    cell = _scored_cell
    one = [cell("d0", "none", (.40, .50)), cell("d0", "drdm", (.80, .95))]
    res = FR.summarise(one, {"planned": ["d0_none_s0", "d0_drdm_s0", "d1_none_s0", "d1_drdm_s0"]})
    (dec,) = [d for d in res["decisions"] if d["b"] == "none"]
    assert dec["diff"]["ci"][0] > 0 and dec["diff"]["clusters"] == 1          # clear, but one draw
    assert dec["decision"] == "not decided" and "one labelled draw" in dec["why"]
    line = next(v for v in res["verdict"] if "minus none" in v)
    assert "not decided yet" in line and "reproduced" not in line
    both = FR.summarise(one + [cell("d1", "none", (.45, .50)), cell("d1", "drdm", (.85, .90))], {})
    (dec,) = [d for d in both["decisions"] if d["b"] == "none"]
    assert dec["diff"]["clusters"] == 2 and dec["decision"] in ("reproduced", "contradicted", "inconclusive")


def test_a_per_structure_mark_and_the_verdict_wait_for_every_planned_draw():
    """✓ (one sign in every draw) needs all the protocol's draws: with 2 of 3 in, the same signs get no
    mark and the verdict says how many of the planned draws it rests on; with 3 the mark appears."""
    cell = _scored_cell
    info = {"protocol": {"draws": 3, "arms": [["small", "none", 1], ["small", "drdm", 1]]}}
    runs = {d: [cell(d, "none", (.40 + k / 50, .50)), cell(d, "drdm", (.80, .90 - k / 50))]
            for k, d in enumerate(("d0", "d1", "d2"))}

    def row_and_line(draws):
        res = FR.summarise([c for d in draws for c in runs[d]], info)
        row = next(r for r in res["markdown"].splitlines() if r.startswith("| 5 | DRDM") and "- none" in r)
        return row, next(v for v in res["verdict"] if "minus none" in v)
    row, line = row_and_line(("d0", "d1"))
    assert "✓" not in row and "2 of the 3 planned labelled draws" in line
    row, line = row_and_line(("d0", "d1", "d2"))
    assert row.count("✓") == len(FS.STRUCTURES) + 1 and "planned" not in line and "3 labelled draws" in line
    # each paired run's difference over the test subjects, filed by draw: here 40 - 2k points in draw k
    avg = FR.summarise([c for d in runs.values() for c in d], info)["dice_difference"]["small"]["drdm_vs_none"]["average"]
    assert {c: len(v) for c, v in avg["pair_means"].items()} == {"d0": 1, "d1": 1, "d2": 1}
    one_each = {c: v[0] for c, v in avg["pair_means"].items()}
    assert one_each == pytest.approx({d: 40 - 2 * k for k, d in enumerate(("d0", "d1", "d2"))})
    assert one_each == pytest.approx(avg["cluster_means"])
    # every draw in but one of its planned seeds missing: no mark yet, and the line counts the paired runs
    info["protocol"]["arms"] = [["small", "none", 2], ["small", "drdm", 2]]
    row, line = row_and_line(("d0", "d1", "d2"))
    assert "✓" not in row and "3 of the 6 planned paired runs" in line and "3 labelled draws" in line


# ---------------------------------------------------------------- a whole ci run

def _budget_by_hand(histories, minimum, multiple, tolerance=0.01, margin=2, cap=None):
    """The rule stated in the protocol: mean curve, running mean over 3 checks, first check within
    ``tolerance`` of the maximum, times ``margin``, rounded up to ``multiple``, at least ``minimum``,
    at most ``cap`` (the pilot's length)."""
    steps = histories[0]["step"]
    mean = [sum(h["val"][i] for h in histories) / len(histories) for i in range(len(steps))]
    smooth = [sum(mean[max(0, i - 2):i + 1]) / len(mean[max(0, i - 2):i + 1]) for i in range(len(mean))]
    first = next(s for s, v in zip(steps, smooth) if v >= max(smooth) - tolerance)
    budget = max(minimum, math.ceil(first * margin / multiple) * multiple)
    return budget if cap is None else min(budget, cap)


def test_a_ci_run_trains_every_cell_to_the_pilot_budget_and_tests_its_final_weights(ci_run):
    res, cell_dir, prot = ci_run["result"], ci_run["cell_dir"], CI
    split, budget = res["split"], res["budget"]
    assert not res["skipped"] and res["n_cells"] == len(FS.plan(prot, split)) == 7
    # the budget is the pilot rule applied to the recorded pilot curves (multiple: a sixth of the pilot)
    assert set(budget) == {"small", "large"}
    for size in ("small", "large"):
        pilots = res["pilot"][size]
        assert sorted(p["method"] for p in pilots) == sorted(prot.pilot_methods)
        assert all(p["seed"] == prot.pilot_seed and p["history"]["steps_run"] == prot.pilot_steps for p in pilots)
        assert budget[size] == _budget_by_hand([p["history"] for p in pilots], prot.min_budget,
                                               prot.pilot_steps // 6, margin=FS.BUDGET_MARGIN, cap=prot.pilot_steps)
    # the pilots saw the validation subjects only: no test score in their records
    assert all("test" not in json.loads(p.read_text()) for p in cell_dir.glob("pilot_*.json"))
    slices = _slices(ci_run["records"], prot)
    test = [s for s in slices if s.subject in split["test"]]
    val = [s for s in slices if s.subject in split["val"]]
    cells = _cells(cell_dir)
    assert len(cells) == 7
    for path in cells:
        rec = json.loads(path.read_text())
        size = "large" if rec["set"] == "large" else "small"
        h = rec["history"]
        # trained exactly to the budget, no early stop; the curve ends at the last step
        assert rec["steps"] == h["steps_run"] == h["step"][-1] == budget[size], path.stem
        checks = list(range(prot.eval_every, budget[size] + 1, prot.eval_every))
        assert h["step"] == checks + ([budget[size]] if checks[-1] != budget[size] else [])
        # on its labelled set only: 2 slices a subject, plus n_aug copies of each with augmentation
        assert rec["subjects"] == split["sets"][rec["set"]]
        assert not set(rec["subjects"]) & set(split["test"] + split["val"])
        n = 2 * len(rec["subjects"])
        assert rec["n_train_images"] == n * (1 if rec["method"] == "none" else 1 + prot.n_aug)
        # the saved weights are the tested ones, and they are the final ones: they give the recorded test
        # scores and the last validation score (not the best, where the two differ)
        mine = _scores_by_hand(path.with_suffix(".pt"), prot, test, split["test"])
        assert sorted(rec["test"]) == sorted(split["test"])
        for subj, row in mine.items():
            for name, d in row.items():
                assert rec["test"][subj][name]["dice"] == pytest.approx(d, abs=1e-12), (path.stem, subj, name)
        on_val = _scores_by_hand(path.with_suffix(".pt"), prot, val, split["val"])
        assert h["val"][-1] == pytest.approx(np.mean([np.mean(list(r.values())) for r in on_val.values()]),
                                             abs=1e-12)
    # the table's per-subject numbers are the replicates' means of those scores
    for size, block in res["results"].items():
        for m, r in block.items():
            runs = [json.loads((cell_dir / f"{c}.json").read_text()) for c in r["replicates"]]
            for subj in split["test"]:
                want = np.mean([run["test"][subj]["LV"]["dice"] for run in runs])
                assert r["per_subject"][subj]["LV"]["dice"] == pytest.approx(want)
    d = res["dice_difference"]["small"]["bigaug_vs_none"]["average"]
    assert d["n"] == len(split["test"]) and d["replicates"] == 2 and d["clusters"] == 2   # draws d0, d1
    assert d["ci"][0] <= d["mean"] <= d["ci"][1]
    assert res["cache"]["bytes"] > 0 and res["settings"] == "drdm" and "Verdict" in res["markdown"]


def test_a_run_killed_and_resumed_in_steps_gives_the_table_of_one_uninterrupted_run(ci_run, tmp_path, monkeypatch):
    records, whole = ci_run["records"], ci_run["result"]
    work = tmp_path / "resumed"
    cell_dir = work / "cells" / whole["run_key"]
    empty = FS.run_fewshot(records, "ci", work_dir=work, stop_after=0, **RUN)           # report only
    assert empty["n_cells"] == 0 and not list(cell_dir.glob("*.json"))

    # killed while the second record is written: the first stays whole, no half file is left
    real_write, calls = Path.write_text, []

    def dying_write(self, text, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            real_write(self, text[: len(text) // 2], *a, **k)
            raise KeyboardInterrupt
        return real_write(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", dying_write)
    with pytest.raises(KeyboardInterrupt):
        FS.run_fewshot(records, "ci", work_dir=work, **RUN)
    monkeypatch.undo()
    assert [p.name for p in cell_dir.glob("*.json")] == ["pilot_small_none.json"]
    assert not [p for p in work.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]
    json.loads((cell_dir / "pilot_small_none.json").read_text())

    # then two records at a time until nothing is left to train
    rounds = 0
    while True:
        before = set(cell_dir.glob("*.json"))
        resumed = FS.run_fewshot(records, "ci", work_dir=work, stop_after=2, **RUN)
        new = set(cell_dir.glob("*.json")) - before
        assert len(new) <= 2
        rounds += 1
        if not new:
            break
    assert rounds == 6                              # 4 pilots + 7 cells, one done before: 5 rounds and a last
    assert sorted(p.name for p in cell_dir.iterdir()) == sorted(p.name for p in ci_run["cell_dir"].iterdir())
    assert resumed["n_cells"] == whole["n_cells"] and resumed["budget"] == whole["budget"]
    assert resumed["split"] == whole["split"]
    for size, block in whole["results"].items():
        assert list(resumed["results"][size]) == list(block)
        for m, r in block.items():
            assert resumed["results"][size][m]["per_subject"] == r["per_subject"], (size, m)
            assert resumed["results"][size][m]["per_replicate"] == r["per_replicate"], (size, m)
            assert "curves" not in r                    # a run's curve is kept once, with its cell
    for name, c in whole["cells"].items():
        assert resumed["cells"][name]["history"] == c["history"], name
    assert resumed["dice_difference"] == whole["dice_difference"]
    assert resumed["markdown"] == whole["markdown"]           # no wall-clock in the tables


def test_a_lost_work_folder_is_rebuilt_from_the_saved_record_without_training(ci_run, tmp_path):
    """The saved record alone (rounded, timings moved to provenance) gives back every cell and pilot: a
    report-only run on an empty folder then has the uninterrupted run's table, and trains nothing."""
    from drdm.provenance import save_results
    whole = ci_run["result"]
    saved = json.loads(save_results("segmentation_folder", whole, profile="ci", seed=0, device="cpu",
                                    wall_time_s=whole["wall_time_s"], out_dir=tmp_path / "out").read_text())
    work = tmp_path / "lost"
    res = FS.run_fewshot(ci_run["records"], "ci", work_dir=work, stop_after=0, restore=saved, **RUN)
    cell_dir = work / "cells" / whole["run_key"]
    # every record back (4 pilots, 7 cells), no weights: nothing was trained, no copy made
    assert sorted(p.name for p in cell_dir.iterdir()) == sorted(p.name for p in ci_run["cell_dir"].glob("*.json"))
    assert not [p for p in work.rglob("*") if p.is_file() and "cells" not in p.relative_to(work).parts]
    assert res["n_cells"] == whole["n_cells"] == 7 and res["budget"] == whole["budget"]
    pilots = sorted(p.stem for p in ci_run["cell_dir"].glob("pilot_*.json"))
    assert res["restored"] == sorted(whole["cells"]) + pilots and "Restored from a saved record" in res["markdown"]
    assert res["wall_s"] == pytest.approx(whole["wall_s"], abs=0.01)
    assert res["seconds"]["pilot"] == pytest.approx(whole["seconds"]["pilot"], abs=0.1)
    for size, block in whole["results"].items():
        for m, r in block.items():
            got = res["results"][size][m]
            assert got["per_replicate"] == pytest.approx(r["per_replicate"], abs=1e-6), (size, m)
            assert got["replicates"] == r["replicates"], (size, m)
    for name, c in whole["cells"].items():
        assert res["cells"][name]["history"]["step"] == c["history"]["step"], name
        assert res["cells"][name]["history"]["val"] == pytest.approx(c["history"]["val"], abs=1e-6), name
        assert res["cells"][name]["machine"] == c["machine"] and c["machine"]["cores"] >= 1, name   # what trained it
    for size, row in whole["dice_difference"].items():
        for comp, d in row.items():
            if d["average"] is not None:
                assert res["dice_difference"][size][comp]["average"]["ci"] == pytest.approx(d["average"]["ci"],
                                                                                          abs=1e-3)
    # the copies' accounting survives the lost cache: the record's ledger gives every copy back, seconds included
    _same_accounts(res["cache"], whole["cache"])
    assert json.loads(ledger_path(cell_dir).read_text())["slices"] == whole["cache"]["slices"]      # seconds too
    assert whole["cache"]["copies"]["drdm_low"] > 0
    # a second restore writes nothing, and a full run (no stop) finds every cell finished: it trains nothing
    stamps = _stamps(work)
    FS.run_fewshot(ci_run["records"], "ci", work_dir=work, restore=saved, **RUN)
    assert {k: v for k, v in _stamps(work).items() if k.startswith("cells/")} == stamps
    # restored cells have no weights: an external test set is scored by none of them
    assert FS.score_external(cell_dir, _records(3, seed=100), CI) == {}
    # weights left without their record (a run killed between the two writes) are no restored cell's
    name = sorted(whole["cells"])[0]
    (cell_dir / f"{name}.json").unlink()
    (cell_dir / f"{name}.pt").write_bytes(b"weights of another training")
    assert restore_cells(saved, cell_dir, whole["run_key"]) == [name]
    assert not (cell_dir / f"{name}.pt").exists()
    # a cell trained to another budget than the record's is not restored (it would only be set aside)
    other_budget = {**saved, "numbers": {**saved["numbers"], "budget": {"small": 1, "large": 1}}}
    assert sorted(restore_cells(other_budget, tmp_path / "budget", whole["run_key"])) == pilots
    # a record written before cells were kept gives its pilots back only
    old = {**saved, "numbers": {k: v for k, v in saved["numbers"].items() if k != "cells"}}
    assert sorted(restore_cells(old, tmp_path / "old", whole["run_key"])) == pilots
    # a record written before the ledger: its per-method totals are restored as a floor of the accounting
    cache = {k: v for k, v in saved["numbers"]["cache"].items() if k != "slices"}
    legacy = {**saved, "numbers": {**saved["numbers"], "cache": cache}}
    floor = FS.run_fewshot(ci_run["records"], "ci", work_dir=tmp_path / "legacy", stop_after=0, restore=legacy, **RUN)
    assert not any(floor["cache"]["slices"].values()) and floor["cache"]["earlier"]       # no copy on disk
    _same_accounts(floor["cache"], whole["cache"])
    # the oldest records timed all copies as one number: their copies and bytes still floor the accounting
    prov = {**saved["provenance"], "timings": {**saved["provenance"]["timings"], "cache.seconds": 12.5}}
    oldest = FS.run_fewshot(ci_run["records"], "ci", work_dir=tmp_path / "oldest", stop_after=0, **RUN,
                            restore={**legacy, "provenance": prov})
    assert oldest["cache"]["copies"] == whole["cache"]["copies"] and oldest["cache"]["bytes"] == whole["cache"]["bytes"]
    # a record of another run (protocol or data) is refused before anything is written
    other = {**saved, "numbers": {**saved["numbers"], "run_key": "0123456789ab"}}
    with pytest.raises(ValueError, match="run key '0123456789ab'"):
        FS.run_fewshot(ci_run["records"], "ci", work_dir=tmp_path / "other", stop_after=0, restore=other, **RUN)
    assert not (tmp_path / "other" / "cells" / whole["run_key"]).exists()


def _same_accounts(got: dict, want: dict) -> None:
    assert got["copies"] == want["copies"] and got["bytes"] == want["bytes"]
    assert got["seconds"] == pytest.approx(want["seconds"], abs=0.2)


def test_copies_lost_from_the_cache_stay_in_the_run_s_accounts(ci_run, tmp_path):
    """Half a method's copies deleted (a cache partly lost): the report still counts every copy once, from the
    run folder's ledger; a copy made again replaces its entry (its new seconds), and counts nothing twice."""
    work = tmp_path / "work"
    shutil.copytree(ci_run["work"], work)
    whole = ci_run["result"]
    files = sorted((work / "aug" / "drdm").glob("*.pt"))
    kept = torch.load(files[0], weights_only=True)
    for f in files[::2]:
        f.unlink()
    res = FS.run_fewshot(ci_run["records"], "ci", work_dir=work, stop_after=0, **RUN)
    _same_accounts(res["cache"], whole["cache"])
    assert not any(f.exists() for f in files[::2])                  # a report makes no copy
    # one copy file made again, 100 s slower: what is on disk wins, the rest of the ledger stays
    remade = {**kept, "seconds": kept["seconds"] + 100.0}
    atomic_write(files[0], lambda tmp: torch.save(remade, tmp))       # as the cache writes it (same bytes)
    again = FS.run_fewshot(ci_run["records"], "ci", work_dir=work, stop_after=0, **RUN)
    assert again["cache"]["copies"] == whole["cache"]["copies"] and again["cache"]["bytes"] == whole["cache"]["bytes"]
    drdm_s = lambda r: sum(v for m, v in r["cache"]["seconds"].items() if m.startswith("drdm"))
    assert drdm_s(again) == pytest.approx(drdm_s(whole) + 100.0, abs=0.2)
    # no ledger and half the cache: only what is on disk is counted (so the check above is not vacuous)
    ledger_path(work / "cells" / whole["run_key"]).unlink()
    part = FS.run_fewshot(ci_run["records"], "ci", work_dir=work, stop_after=0, **RUN)
    drdm = [m for m in whole["cache"]["copies"] if m.startswith("drdm")]        # both doses share aug/drdm
    lost = sum(whole["cache"]["copies"][m] - part["cache"]["copies"][m] for m in drdm)
    assert lost == CI.n_aug * (len(files[::2]) - 1) > 0              # all deleted but the one made again
    assert part["cache"]["bytes"] < whole["cache"]["bytes"]


def test_an_external_test_set_is_scored_from_the_saved_weights_without_training(ci_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(ci_run["work"], work)
    stamps = _stamps(work)
    cell_dir = work / "cells" / ci_run["result"]["run_key"]
    external = _records(3, seed=100)
    res = FS.run_fewshot(ci_run["records"], "ci", work_dir=work, test_records=external, **RUN)
    assert _stamps(work) == stamps                  # nothing trained, made or rewritten
    assert res["n_cells"] == 7
    for size, block in ci_run["result"]["results"].items():
        for m, r in block.items():
            assert res["results"][size][m]["per_subject"] == r["per_subject"]     # the own test set as before
    ext = res["external"]
    assert set(ext["results"]) == {"small", "large"}
    subjects = sorted({r.subject for r in external})
    slices = _slices(external)
    for size, block in ext["results"].items():
        for m, r in block.items():
            assert sorted(r["per_subject"]) == subjects
            for cell in r["replicates"]:
                mine = _scores_by_hand(cell_dir / f"{cell}.pt", CI, slices, subjects)
                want = np.mean([np.mean(list(row.values())) for row in mine.values()])
                assert r["per_replicate"][cell] == pytest.approx(want, abs=1e-12), cell
            if len(r["replicates"]) == 1:
                mine = _scores_by_hand(cell_dir / f"{r['replicates'][0]}.pt", CI, slices, subjects)
                for subj in subjects:
                    for name, _ in FS.STRUCTURES:
                        assert r["per_subject"][subj][name]["dice"] == pytest.approx(mine[subj][name], abs=1e-12)
    assert "bigaug_vs_none" in ext["dice_difference"]["small"]
    assert "External test set" in res["markdown"]
    # score_external itself: every cell, no pilot
    scores = FS.score_external(cell_dir, external, CI)
    assert sorted(scores) == sorted(p.stem for p in _cells(cell_dir))
    with pytest.raises(ValueError, match="no labelled slice"):
        FS.score_external(cell_dir, [], CI)
    # the run's own subjects are not an external test set: refused before anything runs
    with pytest.raises(ValueError, match="shares .* subject"):
        FS.run_fewshot(ci_run["records"], "ci", work_dir=work, test_records=ci_run["records"][:2], **RUN)
    assert _stamps(work) == stamps


def test_drdm_is_skipped_with_a_reason_when_there_is_no_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("DRDM_SHARED", "none")
    prot = dataclasses.replace(CI, budget={"small": 8, "large": 8})
    res = FS.run_fewshot(_records(6), prot, work_dir=tmp_path, methods=("none", "drdm", "drdm_low"), device="cpu",
                         progress=False)
    assert set(res["skipped"]) == {"drdm", "drdm_low"}
    assert all("DRDM_SHARED" in why for why in res["skipped"].values())
    assert list(res["results"]["small"]) == ["none"] and list(res["results"]["large"]) == ["none"]
    assert not (tmp_path / "aug" / "drdm").exists()
    dec = [d for d in res["decisions"] if d["a"] == "drdm" and d["b"] == "none"]
    assert dec and all(d["decision"] == "not compared" and "DRDM_SHARED" in d["why"] for d in dec)
    assert all("not compared" in v for v in res["verdict"])
    assert "Skipped drdm:" in res["markdown"]
    with pytest.raises(ValueError, match="methods must be taken from"):
        FS.run_fewshot(_records(6), prot, work_dir=tmp_path, methods=("none", "mrbs"))


def test_fewshot_cli_writes_the_record_and_reuses_finished_cells(tmp_path, capsys, monkeypatch):
    from drdm.cli import main
    _write_pairs(tmp_path / "data", n_subjects=6)
    argv = ["fewshot", "--data", str(tmp_path / "data"), "--protocol", "ci", "--methods", "none,bigaug",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(argv) == 0
    out = tmp_path / "out" / "ci" / "segmentation_folder.json"
    doc = json.loads(out.read_text())["numbers"]
    # small: d0, d1 x none, bigaug; large: none
    assert doc["n_cells"] == 5 and set(doc["budget"]) == {"small", "large"}
    assert set(doc["results"]["small"]) == {"none", "bigaug"} and set(doc["results"]["large"]) == {"none"}
    assert (tmp_path / "out" / "ci" / "segmentation_folder.md").read_text().strip()
    work = tmp_path / "work"
    stamps = _stamps(work)
    assert len([k for k in stamps if k.startswith("cells/") and k.endswith(".pt")]) == 5 + 4    # cells, pilots
    assert main(argv) == 0                         # resumed: nothing left to train
    assert main(argv + ["--report-only"]) == 0
    assert _stamps(work) == stamps
    assert json.loads(out.read_text())["numbers"]["n_cells"] == 5
    capsys.readouterr()
    assert main(argv[:-2] + ["--methods", "none,mrbs"]) == 2
    assert "choose from" in capsys.readouterr().err
    # a second test set needs a named dataset: a plain folder run names the flag's use, trains nothing
    assert main(argv + ["--test-data-dir", str(tmp_path / "data")]) == 2
    assert "--test-data-dir is for --data " in capsys.readouterr().err
    assert _stamps(work) == stamps
    # the work folder lost: --restore takes its cells back from the written record, trains nothing, and the
    # record's command stays the run's own (--methods only chose what one call trained)
    shutil.rmtree(work)
    restore = argv + ["--restore", str(out), "--report-only"]
    monkeypatch.setattr(sys, "argv", ["drdm", *restore])
    assert main(restore) == 0
    doc = json.loads(out.read_text())["numbers"]
    assert doc["n_cells"] == 5 and len(doc["restored"]) == 5 + 4                      # cells, pilots
    assert doc["command"] == "drdm " + " ".join(a for a in argv if a not in ("--methods", "none,bigaug"))
    assert not list(work.rglob("*.pt"))
    assert main(argv + ["--restore", str(tmp_path / "nothing.json")]) == 2
    assert "not a readable record" in capsys.readouterr().err
    # options are spelled in full: an abbreviation would slip past the recorded command's filter
    with pytest.raises(SystemExit) as e:
        main(argv + ["--rest", str(out)])
    assert e.value.code == 2 and "unrecognized arguments: --rest" in capsys.readouterr().err


def test_fewshot_cli_runs_the_phantoms_through_the_same_pipeline(tmp_path, capsys):
    """``drdm fewshot --data phantom``: the phantom protocol of the profile, the shipped phantom model,
    protocol fields from --set; the book's own file name."""
    from drdm.cli import main
    argv = ["fewshot", "--data", "phantom", "--protocol", "ci", "--methods", "none,drdm", "--set",
            'budget={"small": 6, "large": 6}', "--set", "eval_every=3", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(argv) == 0
    record = tmp_path / "out" / "ci" / "segmentation.json"
    doc = json.loads(record.read_text())["numbers"]
    assert doc["protocol"]["claim"] is False and doc["budget"] == {"small": 6, "large": 6}
    assert doc["n_cells"] == 6 and doc["skipped"] == {}                               # d0, d1, large x none, drdm
    assert doc["settings"] == "drdm" and doc["levels"]["drdm"] == list(FS.PROTOCOLS["phantom-ci"].drdm_levels)
    assert "DRDM (T' 20)" in capsys.readouterr().out
    # --methods chooses what a call trains, not what the record holds: the run's other cells are missing,
    # and a later call that trains one other method keeps every finished cell in the record
    planned = {f"{n}_{m}_s{sd}" for n, m, sd in FS.plan(FS.PROTOCOLS["phantom-ci"], doc["split"])}
    assert not doc["complete"] and set(doc["missing"]) == {c for c in planned if "_none_" not in c
                                                           and "_drdm_s" not in c}
    assert main(argv[:6] + ["bigaug"] + argv[7:]) == 0
    again = json.loads(record.read_text())["numbers"]
    assert again["n_cells"] == 8 and set(again["cells"]) == set(doc["cells"]) | {"d0_bigaug_s0", "d1_bigaug_s0"}
    assert {again["cells"][c]["history"]["val"][-1] for c in doc["cells"]} == \
        {doc["cells"][c]["history"]["val"][-1] for c in doc["cells"]}                  # read back, not retrained


def test_a_cell_trained_to_another_budget_is_set_aside_and_retrained(tmp_path):
    """A finished cell whose step count is not the current budget (e.g. from before a budget revision)
    is moved to ``superseded/``, listed in the record, and trained again to the budget."""
    recs = _records()
    first = FS.run_fewshot(recs, "ci", work_dir=tmp_path, checkpoint="phantom2d", progress=False,
                           methods=("none",))
    cell_dir = next((tmp_path / "cells").iterdir())
    path = cell_dir / "d0_none_s0.json"
    rec = json.loads(path.read_text())
    rec["steps"] = first["budget"]["small"] // 2                 # as if trained to an older, shorter budget
    path.write_text(json.dumps(rec))
    again = FS.run_fewshot(recs, "ci", work_dir=tmp_path, checkpoint="phantom2d", progress=False,
                           methods=("none",))
    assert again["superseded"] == ["d0_none_s0.json"]
    assert json.loads((cell_dir / "superseded" / "d0_none_s0.json").read_text())["steps"] == rec["steps"]
    assert (cell_dir / "superseded" / "d0_none_s0.pt").is_file()
    assert json.loads(path.read_text())["steps"] == again["budget"]["small"]
    assert again["markdown"] == first["markdown"]                # retrained the same way, the same table


def test_the_recorded_acdc_run_keeps_its_run_key():
    """The recorded ACDC run's cells are filed under its run key: the protocol object and the slices
    must still give that key, or a resumed run would start again from nothing."""
    from drdm.provenance import results_dir
    from drdm.shared import acdc_slices_dir
    root = acdc_slices_dir()
    if root is None:
        pytest.skip("../shared/data/acdc_slices is absent (ACDC is not redistributed)")
    from drdm.data import load_acdc_h5
    recorded = json.loads((results_dir() / "cpu" / "segmentation_acdc.json").read_text())["numbers"]
    prot = FS.PROTOCOLS["cpu"]
    slices = prepare_slices(load_acdc_h5(root), crop=prot.crop, size=prot.size, percentiles=prot.percentiles)
    assert FS.run_key(prot, slices) == recorded["run_key"]
