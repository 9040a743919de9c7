"""Session hooks for every pytest run in this repository (tests, doctests, nbval notebooks)."""


def pytest_configure(config):
    """Notebooks re-executed by nbval save their results under ``DRDM_OUTPUT_ROOT``
    (:func:`drdm.provenance.save_results`): a temporary folder here, so no test run
    rewrites the tracked ``results/``. Kernels inherit the variable. (Root conftest:
    it applies however pytest is invoked, e.g. on one notebook.)"""
    import os
    import tempfile
    from drdm.viz import BATCH_ENV
    os.environ[BATCH_ENV] = "1"     # notebooks under nbval draw drdm.viz.explore's figure once, no widgets
    if not os.environ.get("DRDM_OUTPUT_ROOT"):
        config._drdm_output_root = tempfile.TemporaryDirectory(prefix="drdm-test-results-")
        os.environ["DRDM_OUTPUT_ROOT"] = config._drdm_output_root.name


def pytest_unconfigure(config):
    import os
    tmp = getattr(config, "_drdm_output_root", None)
    if tmp is not None:
        os.environ.pop("DRDM_OUTPUT_ROOT", None)
        tmp.cleanup()
