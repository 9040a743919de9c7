"""drdm experiment (drdm.cli.experiment): a NIfTI folder gives the table, seeds and times; bad input
exits 2 with one line; an empty folder is refused."""
import json

import numpy as np
import pytest


pytestmark = pytest.mark.usefixtures("one_thread")


def _write_pairs(folder, n_subjects=4):
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


def test_experiment_cli_on_a_nifti_folder_writes_table_seeds_and_times(tmp_path, capsys):
    from drdm.cli import main
    _write_pairs(tmp_path / "data")
    rc = main(["experiment", "seg", "--profile", "ci", "--data", str(tmp_path / "data"), "--methods", "none,bigaug",
               "--seeds", "3", "--set", "steps=5", "--set", "ratios=[1.0]", "--out", str(tmp_path / "res")])
    assert rc == 0
    full = json.loads((tmp_path / "res" / "ci" / "segmentation_folder.json").read_text())
    doc = full["numbers"]
    assert doc["config"]["seeds"] == [3] and doc["config"]["steps"] == 5 and full["data"] == "folder"
    assert full["provenance"]["wall_time_s"] > 0 and "wall_time_s" not in doc
    assert 0 <= doc["wilcoxon"]["2/100%"]["bigaug_vs_none"]["Average"]["dice"] <= 1
    diff = doc["dice_difference"]["2/100%"]["bigaug_vs_none"]
    assert diff["ci"][0] <= diff["mean"] <= diff["ci"][1] and diff["n"] == 4
    assert set(doc["results"]["2/100%"]["methods"]) == {"none", "bigaug"}
    # subject-level split: 4 subjects -> 2 train, 2 test, each with both slices
    assert doc["split"]["n_train_images"] == 4 and doc["split"]["n_test_images"] == 4
    assert not set(doc["split"]["train_subjects"]) & set(doc["split"]["test_subjects"])
    assert "| #subj/ratio | aug method |" in (tmp_path / "res" / "ci" / "segmentation_folder.md").read_text()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["seg", "--data", "mnms"], "needs --data-dir"),
    (["seg", "--data", "/nonexistent/folder"], "no such data folder"),
    (["seg", "--methods", "none,mrbs"], "not a segmentation method"),
    (["reg", "--methods", "bigaug"], "not a registration method"),
    (["seg", "--set", "stepz=3"], "unknown profile option"),
    (["seg", "--set", "steps"], "KEY=VALUE"),
    (["seg", "--data", "thorax3d"], "thorax3d is for reg"),
    (["seg", "--checkpoint", "/nonexistent.pth"], "no such checkpoint"),
])
def test_experiment_cli_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    from drdm.cli import main
    assert main(["experiment", *argv, "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "res").exists()


def test_experiment_cli_empty_folder_is_refused(tmp_path, capsys):
    from drdm.cli import main
    (tmp_path / "empty").mkdir()
    assert main(["experiment", "reg", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "res")]) == 2
    assert "empty" in capsys.readouterr().err
