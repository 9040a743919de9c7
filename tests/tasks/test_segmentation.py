"""drdm.tasks.segmentation: the ci profile runs end to end, its split keeps subjects whole, the DRDM
path runs from a checkpoint and from records, and a U-Net trained on phantoms reaches a reasonable Dice."""
import json

import numpy as np
from pathlib import Path

import pytest

from drdm.checkpoint import CheckpointError
from drdm.data import ACDC_CONVENTION, Record
from drdm.phantoms import phantom_records
from drdm.tasks import _common, segmentation as S


pytestmark = pytest.mark.usefixtures("one_thread")


def test_segmentation_ci_end_to_end(seg_ci):
    res, wall, out = seg_ci
    assert wall < 120, f"ci profile took {wall:.0f} s"
    json.dumps(res, allow_nan=False)
    assert set(res["results"]) == {"2/50%", "4/100%"}
    assert res["skipped"] == {}                                     # phantom2d ships with the package
    for block in res["results"].values():
        assert set(block["methods"]) == {"none", "bigaug", "elastic", "drdm"}
        for m in block["methods"].values():
            for name in ("LV", "RV", "Myo"):
                for k in ("dice", "sens", "prec"):
                    assert 0 <= m["structures"][name][k]["mean"] <= 1
                assert np.isfinite(m["structures"][name]["asd"]["mean"])
            assert len(m["per_image"]["dice"]["LV"]) == res["split"]["n_test_images"]
        assert {"bigaug_vs_none", "elastic_vs_none"} <= set(res["wilcoxon"][next(iter(res["wilcoxon"]))])
    md = res["markdown"]
    assert "| #subj/ratio | aug method | LV dsc↑ | LV sns↑ | LV prec↑ | RV dsc↑" in md
    assert "| 2/50% | N/A |" in md and "|  | BigAug |" in md and "|  | DRDM |" in md
    saved = json.loads((out / "ci" / "segmentation.json").read_text())
    assert saved["numbers"]["results"].keys() == res["results"].keys()
    assert (out / "ci" / "segmentation.md").read_text().startswith("Segmentation")


def test_segmentation_split_never_leaks(seg_ci):
    res, _, _ = seg_ci
    train, test = set(res["split"]["train_subjects"]), set(res["split"]["test_subjects"])
    assert train and test and not train & test
    # both phases of a subject stay together
    recs = phantom_records("cardiac", 6, 32, 0, ("ED", "ES"))
    tr, te = _common.split_subjects(recs, 0.5, seed=3)
    assert not {r.subject for r in tr} & {r.subject for r in te}
    for part in (tr, te):
        by = {}
        for r in part:
            by.setdefault(r.subject, set()).add(r.phase)
        assert all(phases == {"ED", "ES"} for phases in by.values())


def test_segmentation_drdm_path_and_records(drdm_ckpt):
    # 3-D "volumes" of two phantom slices per subject, passed as records: sliced, preprocessed,
    # split by subject; DRDM augmentation runs from a checkpoint
    recs = []
    from drdm.phantoms import cardiac_phantom
    for k in range(4):
        i0, l0 = cardiac_phantom(50 + k, 40)
        i1, l1 = cardiac_phantom(50 + k, 40, "ES")
        recs.append(Record(np.stack([i0, i1], -1), np.stack([l0, l1], -1).astype(np.int16), (1.5, 1.5, 8.0),
                           np.eye(4), f"p{k}", "ED", "test", ACDC_CONVENTION, "", {}))
    res = S.run_segmentation("ci", data=recs, ratios=(1.0,), methods=("none", "drdm"),
                             drdm_checkpoint=drdm_ckpt[2], steps=5, n_aug=2, drdm_levels=(3,))
    assert res["skipped"] == {} and res["drdm_checkpoint"] == Path(drdm_ckpt[2]).name
    assert set(res["results"]["2/100%"]["methods"]) == {"none", "drdm"}
    assert res["split"]["n_train_images"] == 4 and res["split"]["n_test_images"] == 4
    assert "| 2/100% | N/A |" in res["markdown"] and "|  | DRDM |" in res["markdown"]
    with pytest.raises(ValueError, match="out of range"):
        S.run_segmentation("ci", methods=("drdm",), drdm_checkpoint=drdm_ckpt[2], drdm_levels=(80,))
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        S.run_segmentation("ci", methods=("drdm",), drdm_checkpoint="/nonexistent.pth")
    with pytest.raises(TypeError, match="unknown profile option"):
        S.run_segmentation("ci", stepz=3)


def test_segmentation_reaches_a_reasonable_dice():
    """Reduced version of '100 % of the subjects': 8 training subjects (ED+ES), 32 px, 200 steps."""
    recs = phantom_records("cardiac", 12, 32, 1000, ("ED", "ES"))
    x, y = _common.to_tensors(recs[:16])
    xt, yt = _common.to_tensors(recs[16:])
    model = S.train_segmenter(x, y, steps=200, batch=8, features=(16, 32, 64), norm="batch", seed=0)
    dice = S._score(S.predict(model, xt), yt)["dice"]
    assert dice.mean() > 0.6, dice.mean(0)
