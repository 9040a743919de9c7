"""Session hooks for every pytest run in this repository (tests, doctests, nbval notebooks)."""
import pytest


def pytest_configure(config):
    """Notebooks re-executed by nbval save their results under ``DRDM_OUTPUT_ROOT``
    (:func:`drdm.provenance.save_results`): a temporary folder here, so no test run
    rewrites the tracked ``results/``. Kernels inherit the variable. (Root conftest:
    it applies however pytest is invoked, e.g. on one notebook.) Under pytest-xdist the controller sets it
    before the workers start, so they share it."""
    import os
    import tempfile
    from drdm.viz import BATCH_ENV
    os.environ[BATCH_ENV] = "1"     # notebooks under nbval draw drdm.viz.explore's figure once, no widgets
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:     # a pytest-xdist worker: its share of the cores, for itself and the kernels it starts
        import torch
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // int(workers))
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if not os.environ.get("DRDM_OUTPUT_ROOT"):
        config._drdm_output_root = tempfile.TemporaryDirectory(prefix="drdm-test-results-")
        os.environ["DRDM_OUTPUT_ROOT"] = config._drdm_output_root.name


def pytest_collection_modifyitems(config, items):
    """The tests on the shared ci book runs (``tests/conftest.py::ci_book_runs``, two whole books side by side)
    go first: under `make test`'s pytest-xdist workers (``--no-loadscope-reorder``) the longest file then
    starts at once instead of running alone at the end."""
    items.sort(key=lambda item: "ci_book_runs" not in getattr(item, "fixturenames", ()))


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that changes torch's thread count leaves the next one the session's (all the cores when serial,
    a worker's share under pytest-xdist)."""
    import torch
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pytest_unconfigure(config):
    import os
    tmp = getattr(config, "_drdm_output_root", None)
    if tmp is not None:
        os.environ.pop("DRDM_OUTPUT_ROOT", None)
        tmp.cleanup()
