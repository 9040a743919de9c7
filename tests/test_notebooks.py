"""The notebooks' parameter cells agree with the profile files (papermill only warns otherwise)."""
import os
from pathlib import Path

import papermill
import pytest

from drdm.bookrun import _kernel_manager, check_params, load_params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("profile", ["ci", "cpu", "gpu"])
def test_profile_parameters_exist_in_every_notebook(profile):
    params = load_params(profile, ROOT)
    assert set(params) == {nb.stem for nb in NOTEBOOKS}
    for nb in NOTEBOOKS:
        check_params(nb, params[nb.stem])
        assert params[nb.stem]["profile"] == profile


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameter_cell_defaults_are_the_ci_profile(nb):
    declared = papermill.inspect_notebook(str(nb))
    for name in ("profile", "seed", "device", "out_dir"):
        assert name in declared, f"{nb.name} lacks parameter {name}"
    assert declared["profile"]["default"].strip("\"'") == "ci"


def test_unknown_parameter_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown parameter"):
        check_params(NOTEBOOKS[0], {"seeed": 1})


@pytest.mark.skipif(os.name != "posix", reason="ipc kernels are POSIX only")
def test_book_run_kernels_talk_over_sockets_in_a_folder_of_their_own(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    src, dst, sockets = tmp_path / "in.ipynb", tmp_path / "out.ipynb", tmp_path / "sockets"
    sockets.mkdir()
    nbformat.write(nb, src)
    manager = _kernel_manager(str(sockets))["kernel_manager_class"]
    assert manager.class_traits()["transport"].default_value == "ipc"
    papermill.execute_notebook(str(src), str(dst), kernel_name="python3", progress_bar=False,
                               kernel_manager_class=manager)
    assert nbformat.read(dst, as_version=4).cells[0].outputs[0]["text"] == "42\n"
    kernel_folders = [p for p in sockets.iterdir() if p.name.startswith("k-")]
    assert len(kernel_folders) == 1          # the kernel papermill ran made its own folder there


def test_explore_draws_once_at_the_defaults_in_batch_runs_and_builds_sliders_live(monkeypatch):
    import ipywidgets
    from drdm.viz import BATCH_ENV, explore
    calls = []

    def show(level=30, seed=2):
        calls.append((level, seed))

    monkeypatch.setenv(BATCH_ENV, "1")
    assert explore(show, level=(0, 79, 5), seed=(0, 20)) is None
    assert calls == [(30, 2)]
    monkeypatch.delenv(BATCH_ENV)
    ui = explore(show, level=(0, 79, 5), seed=(0, 20))
    assert isinstance(ui, ipywidgets.interactive) and calls == [(30, 2), (30, 2)]
    level = next(w for w in ui.kwargs_widgets if w.description == "level")
    assert (level.value, level.min, level.max, level.step) == (30, 0, 79, 5)
    level.value = 55                             # a slider move calls show again
    assert calls[-1] == (55, 2)
    with pytest.raises(TypeError, match="default"):
        explore(lambda level: None, level=(0, 79))  # a slider needs a value to start at, live or not


def test_book_runs_and_the_test_suite_mark_their_kernels_as_batch(monkeypatch, tmp_path):
    from drdm.bookrun import main
    from drdm.viz import BATCH_ENV
    assert os.environ.get(BATCH_ENV) == "1"      # root conftest: nbval kernels inherit it
    monkeypatch.delenv(BATCH_ENV)
    seen = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: seen.append(os.environ.get(BATCH_ENV)))
    assert main(["--profile", "ci", "--only", "01_noise", "--out", str(tmp_path)]) == 0
    assert seen == ["1"]                         # set while the kernel starts, so it inherits it
    assert BATCH_ENV not in os.environ           # and the caller's environment is left as it was
