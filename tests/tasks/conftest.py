"""Fixtures of the drdm.tasks tests: untrained DRDM checkpoints and the ci-profile runs."""
import time

import pytest
import torch

from drdm.tasks import registration as R


@pytest.fixture(scope="module")
def drdm_ckpt(tmp_path_factory):
    """Untrained 2-D and 3-D DRDM checkpoints: enough to exercise the drdm code paths."""
    from drdm.network import DRDMNet
    from drdm.training import TrainConfig, save_checkpoint
    out = {}
    for ndim, size in ((2, 32), (3, 24)):
        cfg = TrainConfig(ndim=ndim, image_size=size, device="cpu")
        torch.manual_seed(0)
        out[ndim] = save_checkpoint(tmp_path_factory.mktemp("ck") / f"drdm_{ndim}d.pth", DRDMNet(cfg.network()), cfg)
    return out


def _timed_ci_run(run, tmp_path_factory):
    """``(result, CPU seconds, results dir)`` of a ci-profile runner on one thread. CPU time, not wall: under
    `make test`'s two pytest-xdist workers the run may share its core with the ci book runs."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("results")
    t0 = time.process_time()
    res = run("ci", out_dir=out)
    return res, time.process_time() - t0, out


@pytest.fixture(scope="module")
def reg_ci(tmp_path_factory):
    return _timed_ci_run(R.run_registration, tmp_path_factory)
