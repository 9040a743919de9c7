"""drdm experiment reg (drdm.cli.experiment): the table, seeds and times are written; bad input to it
and to drdm fewshot exits 2 with one line; an empty folder is refused; seg points to drdm fewshot."""
import json

import pytest


pytestmark = pytest.mark.usefixtures("one_thread")


def test_experiment_cli_writes_table_seeds_and_times(tmp_path, capsys):
    from drdm.cli import main
    rc = main(["experiment", "reg", "--profile", "ci", "--data", "phantom", "--methods", "none", "--seeds", "3",
               "--set", "pretrain_steps=2", "--set", "finetune_steps=2", "--out", str(tmp_path / "res")])
    assert rc == 0
    full = json.loads((tmp_path / "res" / "ci" / "registration.json").read_text())
    doc = full["numbers"]
    assert doc["config"]["seeds"] == [3] and doc["config"]["finetune_steps"] == 2 and full["data"] == "phantom"
    assert full["provenance"]["wall_time_s"] > 0 and "wall_time_s" not in doc
    # subject-level split: no subject on both sides
    assert not set(doc["split"]["train_subjects"]) & set(doc["split"]["test_subjects"])
    assert "| synth method | real train |" in (tmp_path / "res" / "ci" / "registration.md").read_text()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["reg", "--data", "mnms"], "needs --data-dir"),
    (["reg", "--data", "/nonexistent/folder"], "no such data folder"),
    (["reg", "--methods", "bigaug"], "not a registration method"),
    (["reg", "--set", "stepz=3"], "unknown profile option"),
    (["reg", "--set", "steps"], "KEY=VALUE"),
    (["reg", "--checkpoint", "/nonexistent.pth"], "no such checkpoint"),
    (["seg"], "drdm fewshot --data phantom"),
    (["../fewshot", "--data", "thorax3d"], "thorax3d is for drdm experiment reg"),
    (["../fewshot", "--methods", "none,mrbs"], "not a segmentation method"),
    (["../fewshot", "--data", "phantom", "--set", "stepz=3"], "unknown profile option"),
    (["../fewshot", "--data", "phantom", "--set", "n_aug"], "KEY=VALUE"),
    (["../fewshot", "--data", "phantom", "--checkpoint", "/nonexistent.pth"], "no such checkpoint"),
])
def test_experiment_cli_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    from drdm.cli import main
    cmd = [argv[0][3:], *argv[1:]] if argv[0].startswith("../") else ["experiment", *argv]    # ../x: drdm x
    assert main([*cmd, "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "res").exists()


def test_experiment_cli_empty_folder_is_refused(tmp_path, capsys):
    from drdm.cli import main
    (tmp_path / "empty").mkdir()
    assert main(["experiment", "reg", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "res")]) == 2
    assert "empty" in capsys.readouterr().err
