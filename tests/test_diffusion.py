"""drdm.diffusion: schedules, Eqs. 7/8/10 for the paper reading, official statistics."""
import json
import math
import pytest
import torch

from drdm import shared
from drdm import spatial as sp
from drdm.diffusion import (DiffusionConfig, ForwardProcess, ddf_variance, discontinuity_variance,
                            dvf_variance, n_t, n_t1)

OFFICIAL = shared.official_dir()   # None without the shared data
FORWARD_STATS = OFFICIAL / "forward_stats.json" if OFFICIAL is not None else None


def test_schedules_match_the_paper_and_release():
    t = torch.arange(80)
    assert n_t(t)[[0, 1, 10, 79]].tolist() == [0, 1, 3, 13]
    assert n_t1(t)[[1, 10, 30, 79]].tolist() == [0, 13, 55, 195]
    # Eq. 11 with alpha 0.6, beta 1: t^1.6 / 1.6
    assert n_t1(torch.tensor([10]), schedule="theory").item() == math.floor(10 ** 1.6 / 1.6)
    fp = ForwardProcess(DiffusionConfig(reading="official", image_size=32))
    n_phi, n_psi = fp.schedule(torch.tensor([0, 30, 79]))
    assert n_phi.tolist() == [1, 55, 195] and n_psi.tolist() == [0, 7, 13]
    # paper reading: phi always contains psi_t
    fp = ForwardProcess(DiffusionConfig(reading="paper", image_size=32))
    n_phi, n_psi = fp.schedule(torch.arange(0, 81))
    assert bool((n_phi >= n_psi).all()) and n_phi[0] == 0


def test_theory_functions_hand_values():
    assert dvf_variance(1.0, 0).item() == 1.0
    assert dvf_variance(1.0, 1, 2).item() == 10.0          # (1 + 4) * 2
    assert discontinuity_variance(1.0, 0, 1).item() == 2.0
    # m = 2, |dx| = 3: 2 * (1 + 4 + 9)
    assert discontinuity_variance(1.0, 2, 3).item() == 28.0
    assert ddf_variance(0.5, 1, 4).item() == pytest.approx(5 * 0.25 * 4)


def _lattice(fp, field):
    """Values of a cropped paper-reading field on the coarsest node lattice."""
    c = fp.config
    step = 2 ** c.m
    off = [(-((h - s) // 2)) % step for h, s in zip([s * c.field_factor for s in c.image_size], c.image_size)]
    return field[:, :, off[0]::step, off[1]::step]


def test_paper_single_dvf_matches_eqs_7_and_8_on_the_node_lattice():
    fp = ForwardProcess(DiffusionConfig(reading="paper", image_size=32))
    c = fp.config
    v = fp.multiscale_dvf(3000, c.sigma, torch.Generator().manual_seed(0), dtype=torch.float64)
    step = 2 ** c.m
    var = v[:, :, ::step, ::step].var().item()
    # tolerance 3 %: Monte-Carlo error of ~1e6 correlated values
    assert var == pytest.approx(dvf_variance(c.sigma, c.m).item(), rel=0.03)
    # exact for power-of-two offsets from a coarse node; others are approximate
    # (|dx| = 3 reads 7 % low because x + dx falls between nodes of scale 2)
    for dx in (1, 2, 4, 8):
        a = v[:, 0, 0:-dx:step, ::step]
        b = v[:, 0, dx::step, ::step][:, :a.shape[1]]
        a = a[:, :b.shape[1]]
        assert (b - a).var().item() == pytest.approx(discontinuity_variance(c.sigma, c.m, dx).item(), rel=0.05), dx


def test_paper_composed_fields_follow_eqs_7_and_10_within_stated_tolerance():
    """Composition reads each DVF off its node lattice (x + phi(x)), where linear
    interpolation has less variance than at the nodes; Eqs. 7 and 10 are the
    small-displacement limit. Stated tolerance: 0.8-1.05 x Eq. 7 for psi_t at
    n_t = 3 and 0.7-1.05 x Eq. 10 for phi at n_{t:1} = 13 (t = 10, 32^2 image)."""
    fp = ForwardProcess(DiffusionConfig(reading="paper", image_size=32))
    c = fp.config
    s = fp.sample(torch.full((400,), 10), torch.Generator().manual_seed(1), dtype=torch.float64)
    assert s.n_psi[0] == 3 and s.n_phi[0] == 13
    r_psi = _lattice(fp, s.psi).var().item() / dvf_variance(c.sigma, c.m, 3).item()
    r_phi = _lattice(fp, s.phi).var().item() / (ddf_variance(c.sigma, c.m, 13).item() * (1 + c.perturbation ** 2))
    assert 0.8 < r_psi < 1.05, r_psi
    assert 0.7 < r_phi < 1.05, r_phi


def test_same_seed_same_fields_and_batches_are_independent():
    for reading in ("official", "paper"):
        fp = ForwardProcess(DiffusionConfig(reading=reading, image_size=24))
        t = torch.tensor([5, 20])
        a = fp.sample(t, torch.Generator().manual_seed(3))
        b = fp.sample(t, torch.Generator().manual_seed(3))
        c = fp.sample(t, torch.Generator().manual_seed(4))
        assert torch.equal(a.phi, b.phi) and torch.equal(a.psi, b.psi)
        assert not torch.equal(a.phi, c.phi)
        assert a.n_phi.tolist() == fp.schedule(t)[0].tolist()
        # larger t, larger field
        mag = sp.magnitude_stats(a.phi)["mean_pct"]
        assert mag[1] > mag[0]


def test_official_target_is_zero_at_t0_and_squaring_agrees_with_euler():
    kw = dict(reading="official", image_size=64)
    e = ForwardProcess(DiffusionConfig(integration="euler", **kw))
    q = ForwardProcess(DiffusionConfig(integration="squaring", **kw))
    t = torch.tensor([0, 10, 79])
    se = e.sample(t, torch.Generator().manual_seed(0), dtype=torch.float64)
    sq = q.sample(t, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.count_nonzero(se.psi[0]) == 0
    # the same velocity: both integrations agree to a few % of the field (Euler's
    # repeated resampling diffuses slightly more; see the notebook)
    for a, b in [(se.phi, sq.phi), (se.psi, sq.psi)]:
        rel = (a - b).norm() / a.norm()
        assert rel < 0.1, rel.item()


@pytest.mark.skipif(FORWARD_STATS is None or not FORWARD_STATS.exists(),
                    reason=shared.absent_reason("the release's forward-process statistics (forward_stats.json)"))
def test_official_reading_matches_release_statistics():
    ref = json.loads(FORWARD_STATS.read_text())
    S, n = ref["image_size"], ref["n_samples_per_t"]
    fp = ForwardProcess(DiffusionConfig(reading="official", image_size=S, timesteps=ref["timesteps"],
                                        sigma=ref["v_scale"]))
    g = torch.Generator().manual_seed(2024)
    for t_str, stats in ref["stats_by_t"].items():
        t = int(t_str)
        assert fp.schedule(t)[0].item() == stats["n_compositions_phi"]
        assert fp.schedule(t)[1].item() == stats["n_compositions_target"]
        rows = {"phi": [], "target": []}
        for _ in range(n // 32):
            s = fp.sample(torch.full((32,), t), g)
            for key, f in (("phi", s.phi.double()), ("target", s.psi.double())):
                m = sp.magnitude_stats(f)
                rows[key].append(torch.stack([m["mean_pct"], m["max_pct"],
                                              100 * sp.negative_jacobian_fraction(f)], 1))
        for key, r in rows.items():
            mean_pct, max_pct, negj = torch.cat(rows[key]).mean(0).tolist()
            want = stats[key]
            for got, name in ((mean_pct, "mean_mag_pct"), (max_pct, "max_mag_pct")):
                assert got == pytest.approx(want[name]["mean"], rel=0.10, abs=1e-9), (t, key, name)
            tol = max(0.2, 0.10 * want["negJ_pct"]["mean"])
            assert abs(negj - want["negJ_pct"]["mean"]) <= tol, (t, key, negj)


def test_3d_fields_have_the_right_shape_and_units():
    fp = ForwardProcess(DiffusionConfig(reading="official", ndim=3, image_size=(32, 24, 16)))
    s = fp.sample(torch.tensor([40]), torch.Generator().manual_seed(0))
    assert s.phi.shape == (1, 3, 32, 24, 16)
    # the release's 3-D unit factor S/64 = 0.5 here: geometric is 2, i.e. 4x larger
    g = ForwardProcess(DiffusionConfig(reading="official", ndim=3, image_size=(32, 24, 16),
                                       unit_factor="geometric"))
    s2 = g.sample(torch.tensor([40]), torch.Generator().manual_seed(0))
    assert torch.allclose(s2.phi, s.phi * 4, rtol=1e-5, atol=1e-6)


def test_q_sample_warps_the_image_and_intermediates_grow():
    fp = ForwardProcess(DiffusionConfig(reading="official", image_size=32))
    img = torch.rand(2, 1, 32, 32)
    It, s = fp.q_sample(img, 30, torch.Generator().manual_seed(0))
    assert torch.allclose(It, sp.warp(img, s.phi))
    s = fp.sample(20, torch.Generator().manual_seed(0), return_intermediates=True)
    mags = [sp.magnitude_stats(p)["mean_pct"].item() for _, p in s.intermediates]
    assert len(mags) > 3 and mags[-1] > mags[0]
    assert torch.allclose(s.intermediates[-1][1], s.phi)


@pytest.mark.parametrize("kwargs, t, match", [
    (dict(reading="official"), 80, r"t must lie in \[0, 79\]"),
    (dict(reading="paper"), -1, r"t must lie in \[0, 80\]"),
    (dict(reading="official"), 2.5, "integer"),
])
def test_bad_t_raises(kwargs, t, match):
    fp = ForwardProcess(DiffusionConfig(image_size=16, **kwargs))
    with pytest.raises(ValueError, match=match):
        fp.sample(t)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="reading"):
        DiffusionConfig(reading="ddpm")
    with pytest.raises(ValueError, match="image_size"):
        DiffusionConfig(ndim=3, image_size=(32, 32))
    fp = ForwardProcess(DiffusionConfig(image_size=16))
    with pytest.raises(ValueError, match=r"image must have shape \(B, C, 16, 16\)"):
        fp.q_sample(torch.rand(1, 1, 8, 8), 3)
