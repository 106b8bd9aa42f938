"""Evaluation metrics: W2, histogram TVDs, mode weights, torsion KL, noise floor."""
import json

import numpy as np
import pytest
import torch

from openmm_dikl import systems
from openmm_dikl.analysis import metrics
from openmm_dikl.systems import shipped_path


@pytest.fixture(scope="module")
def dw4():
    return systems.get("dw4")


def gaussian(n, shape, seed, loc=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(loc, scale, size=(n,) + shape)


# ---------------------------------------------------------------------- W2
def test_w2_identical_sets_is_zero():
    x = gaussian(300, (4, 2), 0)
    assert metrics.wasserstein2(x, x) == 0.0
    assert metrics.wasserstein2(x, x[::-1].copy()) == pytest.approx(0.0, abs=1e-12)


def test_w2_of_shifted_set_matches_closed_form():
    """For y' = y + a: W2(x, y')² = W2(x, y)² − 2 a·(x̄ − ȳ) + |a|² exactly.

    Σ_i (x_i − y_σ(i)) does not depend on the permutation σ, so a shift changes every
    assignment's cost by the same amount.
    """
    x, y = gaussian(400, (1, 2), 1), gaussian(400, (1, 2), 2)
    a = np.array([3.0, -1.5])
    w0 = metrics.wasserstein2(x, y, centre=False)
    w_shift = metrics.wasserstein2(x, y + a, centre=False)
    diff = (x - y).reshape(400, 2).mean(axis=0)
    assert w_shift**2 == pytest.approx(w0**2 - 2 * a @ diff + a @ a, rel=1e-10)
    # the same set shifted: exactly the shift length
    assert metrics.wasserstein2(x, x + a, centre=False) == pytest.approx(np.linalg.norm(a),
                                                                         rel=1e-12)
    assert 0.0 < w0 < 0.5


def test_w2_centring_removes_translations():
    x, y = gaussian(200, (5, 3), 3), gaussian(200, (5, 3), 4)
    per_config_shift = gaussian(200, (1, 3), 5, scale=10.0)
    reference = metrics.wasserstein2(x, y)
    assert metrics.wasserstein2(x, y + per_config_shift) == pytest.approx(reference, rel=1e-12)
    assert metrics.wasserstein2(x, y + np.array([1.0, 2.0, 3.0])) == pytest.approx(reference,
                                                                                   rel=1e-12)
    assert metrics.wasserstein2(x, y + per_config_shift, centre=False) > 5 * reference


def test_w2_accepts_torch_and_validates():
    x = torch.randn(50, 3, 2)
    assert metrics.wasserstein2(x, x.clone()) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="same shape"):
        metrics.wasserstein2(x, x[:40])
    bad = x.clone()
    bad[3, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metrics.wasserstein2(x, bad)
    with pytest.raises(ValueError, match="particle axis"):
        metrics.wasserstein2(x.reshape(50, 6), x.reshape(50, 6))


# ---------------------------------------------------------------------- TVD
def test_energy_tvd_identical_and_disjoint():
    u = np.random.default_rng(6).normal(size=2000)
    assert metrics.energy_tvd(u, u) == 0.0
    above = u.max() + 1.0 + np.random.default_rng(7).random(500)
    assert metrics.energy_tvd(above, u) == 1.0
    assert metrics.energy_tvd(above, u, out_of_range="drop") == 1.0
    # clipping piles the model onto the last reference bin
    edges = np.linspace(u.min(), u.max(), 201)
    last_bin = np.histogram(u, edges)[0][-1] / len(u)
    assert metrics.energy_tvd(above, u, out_of_range="clip") == pytest.approx(1.0 - last_bin)
    # two disjoint clusters inside the reference range
    ref = np.concatenate([np.zeros(100), np.ones(100)])
    assert metrics.energy_tvd(np.zeros(50), np.ones(50)) == 1.0
    assert metrics.energy_tvd(np.zeros(50), ref) == pytest.approx(0.5)


def test_energy_tvd_out_of_range_counts_in_normaliser():
    u_ref = np.linspace(0.0, 1.0, 1001)
    u_model = np.concatenate([u_ref, np.full(1001, np.inf)])   # half the model diverges
    assert metrics.energy_tvd(u_model, u_ref) == pytest.approx(0.5, abs=1e-12)
    assert metrics.energy_tvd(u_model, u_ref, out_of_range="drop") == pytest.approx(0.0,
                                                                                    abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        metrics.energy_tvd(np.array([0.0, np.nan]), u_ref)
    with pytest.raises(ValueError, match="inf"):
        metrics.energy_tvd(u_ref, u_model)
    with pytest.raises(ValueError, match="out_of_range"):
        metrics.energy_tvd(u_ref, u_ref, out_of_range="ignore")


def test_energy_tvd_same_distribution_is_small():
    rng = np.random.default_rng(8)
    same = metrics.energy_tvd(rng.normal(size=20000), rng.normal(size=20000), bins=50)
    other = metrics.energy_tvd(rng.normal(1.0, size=20000), rng.normal(size=20000), bins=50)
    assert same < 0.03
    assert other > 0.3


def test_distance_tvd():
    x = gaussian(500, (4, 2), 9)
    assert metrics.distance_tvd(x, x) == 0.0
    assert metrics.distance_tvd(x + 7.0, x) == 0.0                # distances are invariant
    assert metrics.distance_tvd(2.0 * x, x) > 0.4
    assert metrics.pairwise_distances(x).shape == (500, 6)
    with pytest.raises(ValueError, match="same particles"):
        metrics.distance_tvd(x, gaussian(500, (5, 2), 10))
    with pytest.raises(ValueError, match="at least 2 particles"):
        metrics.distance_tvd(x[:, :1], x[:, :1])


# ---------------------------------------------------------------------- modes
def test_mog40_mode_weights_on_exact_samples():
    means = np.asarray(json.load(open(shipped_path("mog40.json")))["means"])
    x = systems.get("mog40").reference_samples(20000, seed=1).numpy()
    weights = metrics.mode_weights(x, means)
    assert weights.shape == (40,) and weights.sum() == pytest.approx(1.0)
    # binomial std per weight: sqrt(0.025 · 0.975 / 20000) = 0.0011
    assert np.abs(weights - 1 / 40).max() < 0.0055
    assert metrics.mode_coverage(x, means) == 1.0
    assert metrics.mode_weight_error(x, means) < 0.03
    # a sampler stuck in 5 modes
    stuck = means[np.arange(2000) % 5][:, None, :] + 0.1 * gaussian(2000, (1, 2), 11)
    assert metrics.mode_coverage(stuck, means) == pytest.approx(5 / 40)
    assert metrics.mode_weight_error(stuck, means) == pytest.approx(35 / 40)
    with pytest.raises(ValueError, match="means must have shape"):
        metrics.mode_weights(x, means[:, :1])


def test_mw32_basin_weights_on_exact_samples():
    x = systems.get("mw32").reference_samples(20000, seed=2)
    exact = systems.many_well_positive_weight()
    weights = metrics.basin_weights(x)
    assert weights.shape == (16,)
    # binomial std per coordinate: sqrt(0.844 · 0.156 / 20000) = 0.0026
    assert np.abs(weights - exact).max() < 0.012
    mw32 = systems.get("mw32")
    assert mw32.evaluation_data["positive_weight"] == pytest.approx(exact)
    assert metrics.basin_weight_error(x, exact) < 0.005
    assert metrics.basin_weight_error(x, exact, reduce="max") == pytest.approx(
        np.abs(weights - exact).max())
    flipped = x.clone()
    flipped[:, :, 0] = flipped[:, :, 0].abs()              # everything in the heavy well
    assert metrics.basin_weight_error(flipped, exact) == pytest.approx(1.0 - exact)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.basin_weight_error(x, 1.5)
    with pytest.raises(TypeError):
        metrics.basin_weight_error(x)                       # the exact weight is required


# ---------------------------------------------------------------------- torsions
def von_mises_angles(n, centres, kappa, seed):
    """Mixture of von Mises (φ, ψ) pairs, angles in radians (n, 2)."""
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres)
    pick = rng.integers(len(centres), size=n)
    return rng.vonmises(centres[pick], kappa)


def test_ramachandran_kl():
    basins = [[-1.4, 2.6], [-1.2, -0.7], [1.2, -0.9]]       # β, αR, C7ax-like (radians)
    a = von_mises_angles(50000, basins, 8.0, seed=12)
    b = von_mises_angles(50000, basins, 8.0, seed=13)
    c = von_mises_angles(50000, basins[:2], 8.0, seed=14)   # misses a basin
    assert metrics.ramachandran_kl(a, a) == 0.0
    same = metrics.ramachandran_kl(a, b)
    different = metrics.ramachandran_kl(c, a)
    # finite-sample floor: reference tail cells the other sample misses cost ~p·23 nats
    # each (pseudo-probability 1e-10); measured 0.08 at 5e4 samples, 0.02 at 2e5
    assert 0.0 < same < 0.15
    assert different > 1.0                                   # ~1/3 of the mass on empty cells
    # periodicity: shifting by 2π changes nothing
    assert metrics.ramachandran_kl(a + 2 * np.pi, a) == pytest.approx(0.0, abs=1e-12)
    assert metrics.dihedral_kl(a[:, 0], a[:, 0]) == 0.0
    assert metrics.dihedral_kl(a[:, 0], b[:, 0]) < 0.01
    assert metrics.dihedral_kl(c[:, 0], a[:, 0]) > 1.0
    with pytest.raises(ValueError, match=r"shape \(n_samples, 2\)"):
        metrics.ramachandran_kl(a[:, 0], a)
    with pytest.raises(ValueError, match="NaN"):
        metrics.dihedral_kl(np.array([0.0, np.nan]), a[:, 0])


def test_weighted_kl_equals_repeated_samples():
    """Integer weights k_i give the KL of the sample set with sample i repeated k_i times."""
    basins = [[-1.4, 2.6], [-1.2, -0.7], [1.2, -0.9]]
    model = von_mises_angles(3000, basins, 6.0, seed=20)
    ref = von_mises_angles(20000, basins, 8.0, seed=21)
    counts = np.random.default_rng(22).integers(0, 5, size=len(model))
    repeated = np.repeat(model, counts, axis=0)
    for pseudo in (1e-10, 1e-3):
        assert metrics.ramachandran_kl(model, ref, pseudo=pseudo, weights=counts) == \
            pytest.approx(metrics.ramachandran_kl(repeated, ref, pseudo=pseudo), rel=1e-10)
        assert metrics.dihedral_kl(model[:, 1], ref[:, 1], pseudo=pseudo, weights=counts) == \
            pytest.approx(metrics.dihedral_kl(repeated[:, 1], ref[:, 1], pseudo=pseudo),
                          rel=1e-10)
    # the normalisation is internal: scaling the weights changes nothing
    assert metrics.ramachandran_kl(model, ref, weights=0.1 * counts) == pytest.approx(
        metrics.ramachandran_kl(model, ref, weights=counts), rel=1e-12)
    # equal weights are the unweighted estimate
    assert metrics.dihedral_kl(model[:, 0], ref[:, 0], weights=np.full(len(model), 2.0)) == \
        pytest.approx(metrics.dihedral_kl(model[:, 0], ref[:, 0]), rel=1e-12)
    # overweighting one basin (the model's φ > 0 samples) increases the KL
    in_third = (model[:, 0] > 0).astype(float)
    assert metrics.dihedral_kl(model[:, 0], ref[:, 0], weights=1.0 + 10 * in_third) > \
        metrics.dihedral_kl(model[:, 0], ref[:, 0])
    for bad, message in ((np.ones(10), r"shape \(3000,\)"), (-counts, "non-negative"),
                         (np.zeros(len(model)), "all be zero"),
                         (np.full(len(model), np.nan), "finite")):
        with pytest.raises(ValueError, match=message):
            metrics.ramachandran_kl(model, ref, weights=bad)


def test_torsion_angles_match_phi_psi():
    import mdtraj

    target = systems.get("alanine_dipeptide_vacuum")
    traj = mdtraj.load(shipped_path("alanine_dipeptide.pdb"))
    xyz = traj.xyz[0].astype(np.float64) + 0.01 * np.random.default_rng(23).normal(size=(6, 22, 3))
    angles = np.concatenate([metrics.torsion_angles(xyz, target.torsions["phi"]),
                             metrics.torsion_angles(xyz, target.torsions["psi"])], axis=1)
    np.testing.assert_allclose(angles, metrics.phi_psi(xyz, traj.topology), atol=1e-5)
    with pytest.raises(ValueError, match=r"shape \(m, 4\)"):
        metrics.torsion_angles(xyz, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="out of range"):
        metrics.torsion_angles(xyz, [[0, 1, 2, 22]])


def test_phi_psi_on_alanine_dipeptide():
    import mdtraj

    traj = mdtraj.load(shipped_path("alanine_dipeptide.pdb"))
    rng = np.random.default_rng(15)
    xyz = traj.xyz[0].astype(np.float64) + 0.01 * rng.normal(size=(5, 22, 3))
    angles = metrics.phi_psi(xyz, traj.topology.to_openmm())
    assert angles.shape == (5, 2)
    expected = np.concatenate([mdtraj.compute_phi(mdtraj.Trajectory(xyz, traj.topology))[1],
                               mdtraj.compute_psi(mdtraj.Trajectory(xyz, traj.topology))[1]], 1)
    np.testing.assert_allclose(angles, expected, atol=1e-5)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    np.testing.assert_allclose(metrics.phi_psi(xyz @ q.T + 1.0, traj.topology), angles, atol=1e-4)
    with pytest.raises(ValueError, match="one phi and one psi"):
        dw4_topology = systems.get("dw4").topology
        metrics.phi_psi(np.zeros((1, 4, 3)), dw4_topology)
    with pytest.raises(ValueError, match="topology"):
        metrics.phi_psi(xyz)


# ---------------------------------------------------------------------- protocol
def test_dw4_noise_floor_near_spec(dw4):
    """docs/methods.md, two independent reference sets: W2 1.44, energy TVD 0.15, distance
    TVD 0.06.

    Measured with disjoint halves of the shipped set (5 repeats): 1.441, 0.147, 0.062.
    """
    floor = metrics.noise_floor(dw4, n_repeats=2, return_values=True)
    assert floor["centre"] is True and floor["n_eval"] == 2000
    assert 1.38 < floor["w2"] < 1.50
    assert 0.12 < floor["energy_tvd"] < 0.18
    assert 0.045 < floor["distance_tvd"] < 0.08
    assert len(floor["w2_values"]) == 2 and floor["w2_std"] >= 0.0
    assert floor["w2_values"][0] != floor["w2_values"][1]       # repeats use new subsets


def test_evaluate_samples_detects_a_bad_sampler(dw4):
    reference = dw4.reference_samples()
    good = metrics.evaluate_samples(dw4, reference[5000:], n_repeats=1,
                                    reference=reference[:5000])
    squeezed = metrics.evaluate_samples(dw4, 0.8 * reference[5000:], n_repeats=1,
                                        reference=reference[:5000])
    for key in ("w2", "energy_tvd", "distance_tvd"):
        assert squeezed[key] > good[key]
    assert squeezed["distance_tvd"] > 0.5
    assert good["energy_tvd"] < 0.2


def test_evaluate_samples_without_centring_and_validation():
    mog = systems.get("mog40")
    result = metrics.evaluate_samples(mog, mog.reference_samples(500, seed=3), n_eval=500,
                                      n_repeats=2, reference=mog.reference_samples(500, seed=4))
    assert result["centre"] is False                        # MoG-40 is not translation invariant
    assert "distance_tvd" not in result                     # one particle: no pairs
    assert "w2_values" not in result
    assert result["w2"] > 0.5
    with pytest.raises(ValueError, match="at least n_eval"):
        metrics.evaluate_samples(mog, mog.reference_samples(100), n_eval=500)
    with pytest.raises(ValueError, match=r"shape \(n, 1, 2\)"):
        metrics.evaluate_samples(mog, np.zeros((600, 2, 2)), n_eval=500)
    with pytest.raises(ValueError, match="2 \\* n_eval"):
        metrics.noise_floor(mog, n_eval=600, reference=mog.reference_samples(1000))


def test_random_rotation_permutation_keeps_invariants_and_symmetrised_floor():
    from openmm_dikl import systems
    from openmm_dikl.analysis.metrics import noise_floor, random_rotation_permutation
    lj = systems.get("lj13")
    x = lj.reference_samples(50)
    y = random_rotation_permutation(x, seed=3)
    # energies and sorted interatomic distances are invariant; coordinates are not
    assert np.allclose(lj.reduced_energy(torch.as_tensor(y)), lj.reduced_energy(x), atol=1e-9)
    d = lambda a: np.sort(np.linalg.norm(a[:, :, None] - a[:, None], axis=-1).reshape(50, -1), 1)
    assert np.allclose(d(y), d(np.asarray(x)))
    assert np.abs(y - (np.asarray(x) - np.asarray(x).mean(1, keepdims=True))).max() > 0.5
    # in 2-D the rotation angle is uniform: mean of cos and sin over many draws ≈ 0
    e = np.tile([[1.0, 0.0], [-1.0, 0.0]], (4000, 1, 1))
    r = random_rotation_permutation(e, seed=0)
    assert np.abs(np.mean(r[:, 0, 0])) < 0.05 and np.abs(np.mean(r[:, 0, 1])) < 0.05
    # the DW-4 reference set is not rotation/permutation symmetric: a symmetric sampler's W2
    # floor (rotated and permuted half vs half) exceeds the plain floor; TVDs are unchanged
    dw4 = systems.get("dw4")
    plain = noise_floor(dw4, n_eval=2000, n_repeats=1)
    symmetric = noise_floor(dw4, n_eval=2000, n_repeats=1, symmetrise=True)
    assert symmetric["w2"] > plain["w2"] + 0.3  # measured 1.90 vs 1.44
    assert symmetric["energy_tvd"] == pytest.approx(plain["energy_tvd"])


def test_protocol_n_eval_scales_down_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="openmm_dikl.analysis.protocol"):
        assert metrics.protocol_n_eval(5000, 10000, name="dw4") == 2000
    assert not caplog.records
    with caplog.at_level("WARNING", logger="openmm_dikl.analysis.protocol"):
        assert metrics.protocol_n_eval(300, 10000, name="dw4") == 300
        assert metrics.protocol_n_eval(3000, 1000, name="lj13") == 500
    assert len(caplog.records) == 2
    assert "dw4" in caplog.records[0].message and "300 model vs 300 reference" in \
        caplog.records[0].message
    assert "two disjoint sets of 500 reference samples" in caplog.records[1].message
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.protocol_n_eval(1, 10000)


def test_metrics_namespace_reexports_the_modules():
    from openmm_dikl.analysis import protocol, sample_metrics, torsion_metrics
    for module in (protocol, sample_metrics, torsion_metrics):
        for name in module.__all__:
            assert getattr(metrics, name) is getattr(module, name)
    assert set(metrics.__all__) == (set(protocol.__all__) | set(sample_metrics.__all__)
                                    | set(torsion_metrics.__all__))
