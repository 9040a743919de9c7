"""drdm.training: Algorithm 1 learns, resumes bit for bit, and survives bad checkpoints."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drdm import losses, spatial
from drdm.checkpoint import CheckpointError
from drdm.checkpoint import load as load_model, load_checkpoint
from drdm.training import Trainer, TrainConfig, augment_batch

SMALL = dict(image_size=32, batch=4, n_subjects=8, device="cpu", log_every=5, checkpoint_every=5)


def _eval_loss(trainer, seed=123, n=16):
    g = torch.Generator().manual_seed(seed)
    x = trainer.images[torch.randint(0, trainer.images.shape[0], (n,), generator=g)]
    t = torch.randint(1, 80, (n,), generator=g)
    s = trainer.fp.sample(t, g)
    trainer.model.eval()
    with torch.no_grad():
        pred = trainer.model(spatial.warp(x, s.phi), t)
        return losses.drdm_loss(pred, s.psi)["dist"].item()


# ---------------------------------------------------------------- augmentation

def _symmetries_2d(x):
    """The 8 images of x under flips and the transpose, in augment_batch's order of operations."""
    out = []
    for fh in (0, 1):
        for fw in (0, 1):
            for tr in (0, 1):
                y = x.flip(2) if fh else x
                y = y.flip(3) if fw else y
                out.append(y.transpose(2, 3) if tr else y)
    return out


def test_augment_batch_is_one_symmetry_of_the_square_per_batch():
    x = torch.rand(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    seen = set()
    for seed in range(40):
        y = augment_batch(x, torch.Generator().manual_seed(seed))
        assert torch.equal(y, augment_batch(x, torch.Generator().manual_seed(seed)))   # seeded
        hits = [k for k, z in enumerate(_symmetries_2d(x)) if torch.equal(y, z)]
        assert len(hits) == 1, seed            # exactly one symmetry, the same for every item
        seen.add(hits[0])
    assert seen == set(range(8))


def test_augment_batch_3d_moves_voxels_without_resampling():
    x = torch.rand(2, 1, 4, 4, 5, generator=torch.Generator().manual_seed(1))
    lab = torch.randint(0, 4, (2, 1, 4, 4, 5), generator=torch.Generator().manual_seed(2))
    for seed in range(8):
        y = augment_batch(x, torch.Generator().manual_seed(seed))
        z = augment_batch(lab, torch.Generator().manual_seed(seed))
        assert y.shape == x.shape and z.dtype == lab.dtype
        assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)   # no new values
        # image and label travel together: the same seed moves the same voxels
        key = (x * 4).floor().long() * 10 + lab
        assert torch.equal(augment_batch(key, torch.Generator().manual_seed(seed)), (y * 4).floor().long() * 10 + z)


def test_augment_batch_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    augment_batch(torch.zeros(1, 1, 4, 4), torch.Generator().manual_seed(5))
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- training

def test_training_lowers_the_loss(tmp_path):
    tr = Trainer(TrainConfig(steps=150, lr=1e-3, **SMALL), tmp_path, progress=False)
    before = _eval_loss(tr)
    rows = tr.run()
    after = _eval_loss(tr)
    assert after < 0.5 * before, (before, after)
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss,dist,angle,reg") and len(log) == 1 + 150 // 5
    assert rows[-1]["step"] == 150


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    cfg = TrainConfig(steps=6, **{**SMALL, "checkpoint_every": 3})
    a = Trainer(cfg, tmp_path / "a", progress=False)
    a.run(3)
    b = Trainer(cfg, tmp_path / "a", progress=False)        # resumes from last.pth at step 3
    assert b.step == 3
    b.run(6)
    c = Trainer(cfg, tmp_path / "c", progress=False)
    c.run(6)
    for (k, v), (_, w) in zip(b.model.state_dict().items(), c.model.state_dict().items()):
        assert torch.equal(v, w), k
    assert torch.equal(b.gen.get_state(), c.gen.get_state())


def test_corrupt_checkpoint_is_reported_and_previous_survives(tmp_path):
    cfg = TrainConfig(steps=4, **{**SMALL, "checkpoint_every": 2, "keep": 2})
    Trainer(cfg, tmp_path, progress=False).run()
    steps = sorted(tmp_path.glob("step_*.pth"))
    assert [p.name for p in steps] == ["step_0000002.pth", "step_0000004.pth"]
    last = tmp_path / "last.pth"
    last.write_bytes(last.read_bytes()[:500])                # a crash mid-copy of a non-atomic writer
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Trainer(cfg, tmp_path, progress=False)
    ck = load_checkpoint(steps[-1])                          # the previous checkpoint is intact
    assert ck["step"] == 4
    net = load_model(steps[-1])
    assert net.config.ndim == 2 and not net.training


def test_checkpoint_from_another_geometry_is_refused(tmp_path):
    Trainer(TrainConfig(steps=1, **SMALL), tmp_path, progress=False).run()
    with pytest.raises(CheckpointError, match="image_size=32"):
        Trainer(TrainConfig(steps=1, **{**SMALL, "image_size": 40}), tmp_path, progress=False)


@pytest.mark.parametrize("integration", ["euler", "squaring"])
def test_3d_training_step_runs(integration):
    cfg = TrainConfig(ndim=3, steps=1, integration=integration, **{**SMALL, "image_size": 24, "n_subjects": 2, "batch": 1})
    assert cfg.diffusion().integration == integration            # the option reaches the forward process
    tr = Trainer(cfg, "unused", progress=False)
    r = tr.train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in r.values())


DDP_SCRIPT = r"""
import os, sys, torch
from drdm.training import TrainConfig, train
out = sys.argv[1]
cfg = TrainConfig(steps=3, image_size=32, batch=2, n_subjects=4, device="cpu", checkpoint_every=100)
tr = train(cfg, out, progress=False)
torch.save(tr.model.state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))
"""


def test_ddp_two_cpu_ranks_stay_identical(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = Trainer(TrainConfig(steps=1, image_size=32, n_subjects=1, device="cpu"), tmp_path / "x",
                   progress=False).model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], init[k]) for k in a)   # the ranks trained, identically


KILL_SCRIPT = r"""
import sys
from drdm.training import TrainConfig, Trainer
cfg = TrainConfig(steps=100000, image_size=32, batch=2, n_subjects=4, device="cpu", checkpoint_every=1,
                  log_every=1)
Trainer(cfg, sys.argv[1], progress=False).run()
"""


def test_sigkill_during_training_loses_nothing_committed(tmp_path):
    """SIGKILL a run that checkpoints every step; the resumed run starts from an intact checkpoint."""
    import signal
    import time
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, str(script), str(out)], cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("step_*.pth"))) < 2:
        time.sleep(0.2)
    time.sleep(0.3)                                 # land somewhere inside a later step or write
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert (out / "last.pth").exists()
    tr = Trainer(TrainConfig(steps=100000, image_size=32, batch=2, n_subjects=4, device="cpu",
                             checkpoint_every=1, log_every=1), out, progress=False)
    assert tr.step >= 2
    assert not list(out.glob(".*.tmp"))             # stale temporary files were cleaned
    start = tr.step
    tr.run(start + 1)
    assert load_checkpoint(out / "last.pth")["step"] == start + 1


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """A writer that fails with ENOSPC (full disk) leaves the last good checkpoint and no temp file."""
    import errno
    import drdm.training as training
    cfg = TrainConfig(steps=2, **{**SMALL, "checkpoint_every": 1})
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.run(1)
    good = (tmp_path / "last.pth").read_bytes()

    def full_disk(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(training.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        tr.run(2)
    assert (tmp_path / "last.pth").read_bytes() == good
    assert not list(tmp_path.glob(".*.tmp"))
    assert load_checkpoint(tmp_path / "last.pth")["step"] == 1
