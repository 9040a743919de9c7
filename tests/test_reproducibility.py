"""Where records go and what they hold, so two runs compare equal (issue: the book). The two ci-profile book
runs that must give identical numbers are compared in tests/test_clean_clone.py, beside the clean-clone test
that shares them."""
import json


def test_relative_output_folders_follow_drdm_output_root(tmp_path, monkeypatch):
    """save_results resolves a relative out_dir against DRDM_OUTPUT_ROOT (the test suite's
    temporary folder), so re-executed notebooks never rewrite the tracked results/."""
    from drdm.provenance import repo_root, save_results
    monkeypatch.setenv("DRDM_OUTPUT_ROOT", str(tmp_path))
    p = save_results("probe", {"x": 1.0}, profile="ci", seed=0, device="cpu", wall_time_s=0.1, out_dir="results")
    assert p == tmp_path / "results" / "ci" / "probe.json" and json.loads(p.read_text())["numbers"] == {"x": 1.0}
    assert not (repo_root() / "results" / "ci" / "probe.json").exists()
    monkeypatch.delenv("DRDM_OUTPUT_ROOT")
    q = save_results("probe", {"x": 2.0}, profile="ci", seed=0, device="cpu", wall_time_s=0.1,
                     out_dir=tmp_path / "abs")
    assert q == tmp_path / "abs" / "ci" / "probe.json"


def test_timings_are_filed_under_provenance_so_two_runs_compare_equal(tmp_path):
    """Wall times (a number, or a table of numbers, under a timing key) leave ``numbers`` for
    ``provenance.timings``; a table with anything but numbers is a result and stays."""
    from drdm.provenance import save_results
    import torch
    from drdm.provenance import machine
    here = machine()
    assert here["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and here["cores"] >= 1
    numbers = {"cells": {"d0": {"wall_s": 2.5, "dice": 0.5, "machine": here}}, "wall_s": {"d0": 2.5, "d1": 3.0},
               "curve": {"step": [100, 200], "val": [0.4, 0.6]}, "seconds": {"note": "not a timing"}}
    p = save_results("probe", numbers, profile="ci", seed=0, device="cpu", wall_time_s=5.5, out_dir=tmp_path)
    doc = json.loads(p.read_text())
    assert doc["numbers"] == {"cells": {"d0": {"dice": 0.5}}, "curve": {"step": [100, 200], "val": [0.4, 0.6]},
                              "seconds": {"note": "not a timing"}}
    assert doc["provenance"]["timings"] == {"cells.d0.wall_s": 2.5, "cells.d0.machine": here,
                                            "wall_s": {"d0": 2.5, "d1": 3.0}}
    assert doc["provenance"]["wall_time_s"] == 5.5 and doc["provenance"]["machine"] == here


def test_joining_the_timings_back_gives_the_record_as_built(tmp_path):
    """join_timings undoes the split: a saved record's numbers with its timings joined back equal what the
    writer passed, at every depth and under names with dots (followed key by key, never split on dots);
    a timing passed by name (not a timing key) stays out."""
    from drdm.provenance import join_timings, save_results
    numbers = {"cache": {"slices": {"drdm": {"p001.ED.s03": {"copies": 8, "seconds": 97.5}}}, "bytes": 10},
               "wall_s": {"d0": 2.5}, "seconds": {"note": "not a timing"}, "only": {"wall_s": 1.0},
               "cells": {"d0": {"dice": 0.5, "machine": {"arch": "x86_64", "cpu_capability": "AVX2", "cores": 2}}}}
    doc = json.loads(save_results("probe", numbers, profile="ci", seed=0, device="cpu", wall_time_s=5.5,
                                  out_dir=tmp_path, timings={"sample_seconds_total": 9.0}).read_text())
    assert doc["numbers"]["cache"]["slices"]["drdm"]["p001.ED.s03"] == {"copies": 8}
    assert doc["numbers"]["only"] == {}
    joined = join_timings(doc["numbers"], doc["provenance"]["timings"])
    assert joined == numbers
    assert join_timings(numbers, {}) == numbers
