"""drdm.tasks._common: the tasks' door to a DRDM checkpoint (load_drdm, on drdm.checkpoint.resolve) and
the subject-level split's guard against leaks (split_subjects)."""
import pytest

from drdm.checkpoint import CheckpointError
from drdm.phantoms import phantom_records
from drdm.tasks import _common


pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpoint_resolution_is_one_rule_for_every_door(tmp_path, monkeypatch, drdm_ckpt):
    """drdm.checkpoint.resolve: a path, a shipped name, or (None) the shipped model of the data's
    dimension; the tasks skip with a reason only where nothing was asked for."""
    from drdm import pretrained
    from drdm.checkpoint import resolve
    assert resolve(drdm_ckpt[2]) == drdm_ckpt[2] and resolve("phantom2d") == pretrained.pretrained_path("phantom2d")
    assert resolve(None, 2) == pretrained.pretrained_path("phantom2d")
    assert resolve(None, 3) == pretrained.pretrained_path("phantom3d")
    with pytest.raises(CheckpointError, match="no 4-D DRDM model is shipped"):
        resolve(None, 4)
    with pytest.raises(CheckpointError, match="no such checkpoint file.*phantom2d"):
        resolve(tmp_path / "missing.pth")
    net, path, reason = _common.load_drdm(None, 3, "cpu")                     # the shipped 3-D model
    assert net.config.ndim == 3 and reason is None and path == str(pretrained.pretrained_path("phantom3d"))
    monkeypatch.setattr(pretrained, "PRETRAINED", {"phantom2d": pretrained.PRETRAINED["phantom2d"]})
    monkeypatch.setattr("drdm.checkpoint.PRETRAINED", pretrained.PRETRAINED)
    net, path, reason = _common.load_drdm(None, 3, "cpu")
    assert net is None and "no 3-D DRDM model" in reason                      # none shipped: skipped, with the reason
    net, path, reason = _common.load_drdm("phantom2d", 2, "cpu")               # the name the CLI takes, too
    assert net.config.ndim == 2 and reason is None
    net, path, reason = _common.load_drdm(drdm_ckpt[3], 2, "cpu")
    assert net is None and "3-D DRDM network" in reason
    net, path, reason = _common.load_drdm(drdm_ckpt[3], 3, "cpu")
    assert net.config.ndim == 3 and reason is None


def test_split_subjects_refuses_a_leaking_split(monkeypatch):
    """A split that puts one subject on both sides is refused, naming the subjects: here a splitter
    that splits records, not subjects (every ED slice to train, every ES slice to test)."""
    import drdm.data
    recs = phantom_records("cardiac", 3, 32, 0, ("ED", "ES"))
    train, test = _common.split_subjects(recs, 0.5, seed=3)                 # the real splitter: no leak
    assert not {r.subject for r in train} & {r.subject for r in test}

    def by_record(records, fractions, seed):
        return {"train": [r for r in records if r.phase == "ED"], "val": [],
                "test": [r for r in records if r.phase == "ES"]}

    monkeypatch.setattr(drdm.data, "subject_split", by_record)
    with pytest.raises(ValueError, match="subjects in both train and test") as err:
        _common.split_subjects(recs, 0.5, seed=3)
    assert "['phantom0000', 'phantom0001', 'phantom0002']" in str(err.value)
