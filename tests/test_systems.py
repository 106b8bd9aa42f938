"""Target systems: torch twins vs OpenMM, finite differences, reference sets."""
import numpy as np
import pytest
import torch
from openmm import unit

from openmm_dikl import systems
from openmm_dikl.samplers import run_sampler

TWINS = ["dw4", "lj13", "lj55", "mw32", "mog40"]


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = systems.get(name)
        return cache[name]
    return get


def random_configurations(target, n, seed=0):
    """Reference samples where they exist, otherwise perturbations of the start (nm)."""
    start = torch.as_tensor(target.positions.value_in_unit(unit.nanometer))[:, :target.spatial_dim]
    gen = torch.Generator().manual_seed(seed)
    return start + 0.05 * torch.randn((n,) + tuple(start.shape), generator=gen, dtype=torch.float64)


def test_names_and_unknown():
    assert set(systems.names()) == {"alanine_dipeptide_vacuum", "alanine_dipeptide_implicit",
                                    "alanine_dipeptide_ani", "dw4", "lj13", "lj55", "mw32", "mog40",
                                    "ace_ala3_nme_implicit", "ace_ala3_nme_implicit_unconstrained"}
    with pytest.raises(KeyError, match="unknown system 'nope'.*dw4"):
        systems.get("nope")


@pytest.mark.parametrize("name", TWINS)
def test_reduced_units(built, name):
    target = built(name)
    assert target.temperature.value_in_unit(unit.kelvin) == pytest.approx(120.2722, abs=1e-3)
    assert target.kT.value_in_unit(unit.kilojoule_per_mole) == pytest.approx(1.0, rel=1e-12)
    assert target.has_torch_twin


WITH_REFERENCE = ["dw4", "lj13", "mw32", "mog40"]


@pytest.mark.parametrize("name, kind", [(n, k) for n in TWINS for k in ("random", "far")]
                         + [(n, "reference") for n in WITH_REFERENCE])
def test_twin_matches_openmm(built, name, kind):
    target = built(name)
    if kind == "reference":
        x = target.reference_samples(64)
    else:
        x = random_configurations(target, 64, seed=1)
        if kind == "far":
            x = 2.5 * x + 3.0
    with target.bridge() as bridge:
        u_mm, f_mm = bridge.compute(x)
    u_tw = target.reduced_energy(x)
    f_tw = target.reduced_force(x)
    np.testing.assert_allclose(u_tw.numpy(), u_mm.numpy(), rtol=1e-6, atol=1e-9)
    scale = f_tw.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    np.testing.assert_allclose((f_tw / scale).numpy(), (f_mm / scale).numpy(), rtol=0, atol=1e-6)


def central_difference(energy, x, h):
    """Central finite-difference gradient of a scalar energy on one configuration."""
    grad = torch.zeros_like(x)
    flat, gflat = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += h
        minus[i] -= h
        gflat[i] = (float(energy(plus.view_as(x))) - float(energy(minus.view_as(x)))) / (2 * h)
    return grad


@pytest.mark.parametrize("name", TWINS + ["alanine_dipeptide_vacuum", "alanine_dipeptide_implicit",
                                          "alanine_dipeptide_ani"])
def test_forces_match_finite_differences(built, name):
    target = built(name)
    x = random_configurations(target, 1, seed=2)[0]
    if target.n_particles > 20:  # keep the cost down: all atoms of ala2, a subset of LJ-55 is enough
        x = random_configurations(target, 1, seed=2)[0] if "alanine" not in name else \
            torch.as_tensor(target.positions.value_in_unit(unit.nanometer))
    force = target.reduced_force(x)
    fd = -central_difference(lambda y: target.reduced_energy(y), x, h=1e-5)
    scale = float(force.abs().max())
    np.testing.assert_allclose(force.numpy() / scale, fd.numpy() / scale, atol=2e-5)


def test_reference_sets_mean_energy(built):
    dw4, lj13 = built("dw4"), built("lj13")
    assert float(dw4.reduced_energy(dw4.reference_samples()).mean()) == pytest.approx(-22.47, abs=0.02)
    assert float(lj13.reduced_energy(lj13.reference_samples()).mean()) == pytest.approx(-43.1, abs=0.15)


def test_mog40_exact_samples(built):
    mog = built("mog40")
    x = mog.reference_samples(20000, seed=3)
    assert x.shape == (20000, 1, 2)
    assert float(-mog.reduced_energy(x).mean()) == pytest.approx(-6.86, abs=0.03)
    nearest = torch.cdist(x[:, 0], torch.as_tensor(np.array(
        [[float(v) for v in m] for m in __import__("json").load(open(systems.shipped_path("mog40.json")))["means"]]))).argmin(1)
    weights = torch.bincount(nearest, minlength=40).double() / len(x)
    assert weights.min() > 0.015 and weights.max() < 0.035


def test_mw32_exact_samples(built):
    mw = built("mw32")
    x = mw.reference_samples(20000, seed=4)
    exact = systems.many_well_positive_weight()
    assert 0.8 < exact < 0.9
    positive = (x[..., 0] > 0).double().mean(0)
    assert torch.allclose(positive, torch.full((16,), exact, dtype=torch.float64), atol=0.012)
    # the y marginal is a unit Gaussian
    assert float(x[..., 1].var()) == pytest.approx(1.0, abs=0.02)


def test_no_reference_raises(built):
    with pytest.raises(NotImplementedError, match="lj55"):
        built("lj55").reference_samples()


def test_low_energy_start(built):
    # the starting configuration of each twin system is a local minimum
    for name in TWINS:
        target = built(name)
        x = torch.as_tensor(target.positions.value_in_unit(unit.nanometer))[:, :target.spatial_dim]
        assert float(target.reduced_force(x).abs().max()) < 1e-2, name


def test_shape_errors(built):
    dw4 = built("dw4")
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4, 2\)"):
        dw4.reduced_energy(torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="NaN or inf in sample 1"):
        dw4.to_mdtraj(np.stack([np.zeros((4, 2)), np.full((4, 2), np.nan)]))


def test_to_mdtraj(built):
    dw4 = built("dw4")
    traj = dw4.to_mdtraj(dw4.reference_samples(5))
    assert traj.n_frames == 5 and traj.n_atoms == 4
    np.testing.assert_allclose(traj.xyz[..., 2], 0.0)
    np.testing.assert_allclose(traj.xyz[..., :2], dw4.reference_samples(5).numpy(), atol=1e-6)
    ala = built("alanine_dipeptide_vacuum")
    traj = ala.to_mdtraj(ala.positions.value_in_unit(unit.nanometer))
    import mdtraj
    assert len(mdtraj.compute_phi(traj)[0][0]) == 4


def test_amber_variants_differ_by_solvation(built):
    vac, imp = built("alanine_dipeptide_vacuum"), built("alanine_dipeptide_implicit")
    x = torch.as_tensor(vac.positions.value_in_unit(unit.nanometer))
    # solvation free energy of a polar peptide is negative
    assert float(imp.reduced_energy(x)) < float(vac.reduced_energy(x)) - 5
    assert imp.temperature.value_in_unit(unit.kelvin) == 300.0
    assert imp.system.getNumConstraints() == 0


def test_ani_openmm_system_matches_torch(built):
    import openmm
    ani = built("alanine_dipeptide_ani")
    x = random_configurations(ani, 3, seed=5) * 0 + torch.as_tensor(ani.positions.value_in_unit(unit.nanometer))
    x = x + 0.005 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    context = openmm.Context(ani.system, openmm.VerletIntegrator(1e-3),
                             openmm.Platform.getPlatformByName("Reference"))
    kt = ani.kT.value_in_unit(unit.kilojoule_per_mole)
    for conf, u in zip(x, ani.reduced_energy(x)):
        context.setPositions(conf.numpy())
        state = context.getState(getEnergy=True, getForces=True)
        assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / kt == pytest.approx(float(u), rel=1e-10)
    # an OpenMM integrator runs the ANI system
    context.getIntegrator().step(2)


def test_from_openmm_user_system(tmp_path):
    import openmm
    from openmm import app
    pdb = app.PDBFile(systems.shipped_path("alanine_dipeptide.pdb"))
    ff = app.ForceField("amber14-all.xml")
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    target = systems.from_openmm(system, pdb.topology, pdb.positions, 300 * unit.kelvin)
    x = torch.as_tensor(target.positions.value_in_unit(unit.nanometer))
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pdb.positions)
    e = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert float(target.reduced_energy(x)) == pytest.approx(e / target.kT.value_in_unit(unit.kilojoule_per_mole), rel=1e-9)
    constrained = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    # constrained Systems are accepted (digs runs the OpenMM torsional move on them) and
    # refused by the methods that move every Cartesian coordinate
    target = systems.from_openmm(constrained, pdb.topology, pdb.positions, 300.0)
    assert target.sampler_defaults["digs"]["engine"] == "openmm"
    with pytest.raises(ValueError, match="constraints"):
        run_sampler(target, method="mala", force_evals=10, out=str(tmp_path / "no.dcd"),
                    progress=False)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"shape \(batch, 22, 3\)"):
        systems.from_openmm(system, pdb.topology, np.zeros((21, 3)), 300.0)
    with pytest.raises(ValueError, match="temperature"):
        systems.from_openmm(system, pdb.topology, pdb.positions, -1.0)
