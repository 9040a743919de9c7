"""The notebooks' parameter cells agree with the profile files (papermill only warns otherwise)."""
from pathlib import Path

import papermill
import pytest

from drdm.bookrun import check_params, load_params

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
