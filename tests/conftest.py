"""Fixtures shared by several test modules."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors on a shared 2-core machine run fastest on one thread (no oversubscription).

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the thread count is
    restored after the module.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_configure(config):
    """Notebooks re-executed by nbval save their results under ``DRDM_OUTPUT_ROOT``
    (:func:`drdm.provenance.save_results`): a temporary folder here, so ``make test``
    never rewrites the tracked ``results/``. Kernels inherit the variable."""
    import os
    import tempfile
    if not os.environ.get("DRDM_OUTPUT_ROOT"):
        config._drdm_output_root = tempfile.TemporaryDirectory(prefix="drdm-test-results-")
        os.environ["DRDM_OUTPUT_ROOT"] = config._drdm_output_root.name


def pytest_unconfigure(config):
    import os
    tmp = getattr(config, "_drdm_output_root", None)
    if tmp is not None:
        os.environ.pop("DRDM_OUTPUT_ROOT", None)
        tmp.cleanup()
