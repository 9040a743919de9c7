"""Long runs that meet a full disk or run out of memory inside a unit of work: one line, exit 75,
no partial file, and the next run resumes (drdm.faults)."""
import errno
import json
import pathlib

import pytest
import torch

from drdm import faults
from drdm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _files(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_guard_turns_full_disk_and_memory_into_one_line_and_lets_other_errors_through():
    for exc, words in ((MemoryError(), "out of memory"), (OSError(errno.ENOSPC, "No space left on device"), "ENOSPC"),
                       (OSError(errno.EDQUOT, "Disk quota exceeded"), "EDQUOT")):
        with pytest.raises(faults.RunStopped) as info:
            with faults.guard("cell x"):
                raise exc
        text = str(info.value)
        assert text.startswith("cell x: stopped") and words in text and "re-run" in text and "\n" not in text
    with pytest.raises(OSError) as other:                       # a missing file is not a full disk
        with faults.guard("cell x"):
            raise FileNotFoundError(errno.ENOENT, "gone")
    assert not isinstance(other.value, faults.RunStopped)


@pytest.fixture()
def fewshot_argv(tmp_path):
    from tests.test_fewshot import _write_pairs
    _write_pairs(tmp_path / "data", n_subjects=6)           # the ci split needs 6 subjects per group
    return ["fewshot", "--data", str(tmp_path / "data"), "--protocol", "ci", "--methods", "none",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--device", "cpu"]


@pytest.mark.parametrize("fault", ["memory", "disk"])
def test_a_fewshot_cell_that_runs_out_stops_with_one_line_and_resumes(fault, fewshot_argv, tmp_path, monkeypatch,
                                                                       capsys):
    from drdm.tasks import fewshot as FS
    real_train, real_save, calls = FS._train, torch.save, []

    def second_unit_fails(*a, **k):                      # the second unit (the BigAug pilot) dies while training
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError
        return real_train(*a, **k)

    def cache_disk_full(obj, f, *a, **k):                # the BigAug copies' cache file cannot be written
        real_save(obj, f, *a, **k)                       # (half written: the temporary file exists)
        if "/aug/" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")

    if fault == "memory":
        monkeypatch.setattr(FS, "_train", second_unit_fails)
    else:
        monkeypatch.setattr(torch, "save", cache_disk_full)
    capsys.readouterr()
    assert main(fewshot_argv) == faults.EXIT_STOPPED
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("drdm")]   # not the bars
    assert len(err) == 1 and "stopped" in err[0] and ("out of memory" if fault == "memory" else "ENOSPC") in err[0]
    work = tmp_path / "work"
    left = _files(work)
    assert not [f for f in left if ".tmp" in f or f.split("/")[-1].startswith(".")], left   # no partial file
    # the finished unit (the first pilot: its record and its weights), nothing of the second
    assert sorted(f.split("/")[-1] for f in left if f.startswith("cells/")) == ["pilot_small_none.json",
                                                                                "pilot_small_none.pt"]
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    assert main(fewshot_argv) == 0                                   # resumes: the missing units only
    # 4 pilots (none, BigAug at both sizes) and 3 cells (d0, d1, large without augmentation), each .json + .pt,
    # and the run's ledger of the BigAug copies (cells/<run key>.copies.json)
    cells = [f for f in _files(work) if f.startswith("cells/")]
    assert len([f for f in cells if not f.endswith(".copies.json")]) == 2 * (4 + 3)
    assert len([f for f in cells if f.endswith(".copies.json")]) == 1


def test_fidelity_rows_are_whole_lines_even_when_the_disk_fills(tmp_path, monkeypatch):
    from drdm import fidelity
    part = tmp_path / "partial.jsonl"
    fidelity.append_rows(part, [{"index": 0}, {"index": 1}])
    with part.open("ab") as fh:                                  # a run killed in the middle of a line
        fh.write(b'{"index": 2, "rec_')
    assert fidelity.read_partial(part) == [{"index": 0}, {"index": 1}]
    assert part.read_bytes().endswith(b"}\n")                     # the cut line is gone from the file
    size = part.stat().st_size

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fidelity.os, "fsync", full)
    with pytest.raises(OSError):
        fidelity.append_rows(part, [{"index": 3}])
    assert part.stat().st_size == size                            # cut back: no half row
    monkeypatch.undo()
    fidelity.append_rows(part, [{"index": 3}])
    assert [r["index"] for r in fidelity.read_partial(part)] == [0, 1, 3]
    json.loads(part.read_text().splitlines()[-1])
