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

