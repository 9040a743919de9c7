"""drdm.shared: DRDM_SHARED hides the shared data, points at another folder, or leaves the default."""
import pytest

from drdm import shared


@pytest.mark.parametrize("value", ["none", "None", "", "off", "0"])
def test_hidden_shared_data_is_absent_everywhere(monkeypatch, value):
    monkeypatch.setenv(shared.ENV, value)
    assert shared.shared_root() is None
    assert shared.official_dir() is None and shared.official_checkpoint() is None and shared.mnms_dir() is None
    assert "hidden or missing" in shared.absent_reason("the release's weights")


def test_a_folder_in_the_variable_is_used(monkeypatch, tmp_path):
    (tmp_path / "data" / "mnms_subset").mkdir(parents=True)
    ckpt = tmp_path / "reference" / "official" / "models" / "cmr_recresacnet" / "000000_cmr_recresacnet.pth"
    ckpt.parent.mkdir(parents=True)
    monkeypatch.setenv(shared.ENV, str(tmp_path))
    assert shared.shared_root() == tmp_path and shared.mnms_dir() == tmp_path / "data" / "mnms_subset"
    assert shared.official_dir() == tmp_path / "reference" / "official"
    assert shared.official_checkpoint() is None              # the folder exists, the file does not
    ckpt.write_bytes(b"")
    assert shared.official_checkpoint() == ckpt


def test_a_missing_folder_counts_as_absent(monkeypatch, tmp_path):
    monkeypatch.setenv(shared.ENV, str(tmp_path / "nowhere"))
    assert shared.shared_root() is None and shared.mnms_dir() is None


def test_default_is_the_folder_beside_the_checkout(monkeypatch):
    monkeypatch.delenv(shared.ENV, raising=False)
    root = shared.shared_root()
    assert root is None or root.name == "shared"
    assert "../shared" in shared.absent_reason("x")
