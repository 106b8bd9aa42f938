"""OpenMM-native torsional DiGS: torsion selection, exactness, constraints, platforms, API."""
import numpy as np
import openmm
import pytest
from openmm import app, unit
from openmmtools import testsystems

from openmm_dikl import systems
from openmm_dikl.samplers import (TorsionalDiffusiveGibbsMove, TorsionalDiffusiveGibbsSimulation,
                                  TorsionalDiGSEngine)
from openmm_dikl.samplers.torsional import build_kernel_force, dihedrals, pivot
from openmm_dikl.systems.torsions import select_torsions, torsion_levels

KT_300 = 8.314462618e-3 * 300.0   # kJ/mol
# V(φ) = 12 (1 + cos 2φ) + 3 (1 + cos φ) kJ/mol: two wells at φ ≈ ±100°, barrier ≈ 10 kT
TOY_TERMS = ((2, 12.0), (1, 3.0))


def toy_chain(constrained):
    """Four atoms a-b-c-d with a double-well torsion; exact p(φ) ∝ exp(−V(φ)/kT).

    The Jacobian of Cartesian → internal coordinates has no φ, bonds and angles are
    separable from φ, and the constrained bonds a-b and c-d share no atom (constant
    Fixman determinant), so the φ marginal is exactly exp(−V/kT) either way.
    """
    topology = app.Topology()
    residue = topology.addResidue("TOY", topology.addChain())
    atoms = [topology.addAtom(f"C{i}", app.element.carbon, residue) for i in range(4)]
    for i in range(3):
        topology.addBond(atoms[i], atoms[i + 1])
    system = openmm.System()
    for mass in (12.0, 14.0, 16.0, 1.0):
        system.addParticle(mass)
    bonds, angles = openmm.HarmonicBondForce(), openmm.HarmonicAngleForce()
    for i, j in ((0, 1), (1, 2), (2, 3)):
        if constrained and (i, j) != (1, 2):
            system.addConstraint(i, j, 0.15)
        else:
            bonds.addBond(i, j, 0.15, 2e5)
    angles.addAngle(0, 1, 2, 1.9, 400.0)
    angles.addAngle(1, 2, 3, 1.9, 400.0)
    torsion = openmm.PeriodicTorsionForce()
    for n, k in TOY_TERMS:
        torsion.addTorsion(0, 1, 2, 3, n, 0.0, k)
    for force in (bonds, angles, torsion):
        system.addForce(force)
    x = np.array([[0.1, 0.1, 0.0], [0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [0.25, 0.1, 0.05]])
    return topology, system, x


def exact_moments():
    grid = np.linspace(-np.pi, np.pi, 20001)[:-1]
    weights = np.exp(-sum(k * (1 + np.cos(n * grid)) for n, k in TOY_TERMS) / KT_300)
    weights /= weights.sum()
    return {name: float((weights * f(grid)).sum()) for name, f in MOMENTS.items()}


MOMENTS = {"cos": np.cos, "cos2": lambda a: np.cos(2 * a), "sin": np.sin}


def toy_engine(constrained, platform, seed, n_denoise_steps=5):
    topology, system, x = toy_chain(constrained)
    torsions = select_torsions(topology, np.array([[0, 1, 2, 3]]))
    engine = TorsionalDiGSEngine(system, torsions, torsion_levels(torsions), np.pi, 300.0,
                                 timestep=0.002, n_denoise_steps=n_denoise_steps,
                                 platform=platform, seed=seed)
    engine.set_positions(x)
    return engine


def sample_phi(engine, n_sweeps):
    phi = []
    for _ in range(n_sweeps):
        engine.sweep(1)
        phi.append(dihedrals(engine._positions(), [[0, 1, 2, 3]])[0])
    return np.array(phi)


# ---------------------------------------------------------------------- torsion selection
def test_select_torsions_on_peptides_nests_and_levels():
    ala2 = systems.get("alanine_dipeptide_vacuum")
    selected = select_torsions(ala2.topology)
    assert [t.name for t in selected] == ["phi ALA2", "psi ALA2"]
    assert all(t.atoms[3] in t.moving_atoms and not {t.atoms[1], t.atoms[2]} & set(t.moving_atoms)
               for t in selected)
    peptide = systems.get("ace_ala3_nme_implicit")
    selected = select_torsions(peptide.topology)
    assert [t.name.split()[0] for t in selected] == ["phi", "psi"] * 3
    # along the chain the moving sides nest, so no level may hold two torsions that overlap
    assert len(torsion_levels(selected, "single")) == 6
    for level in torsion_levels(selected, "disjoint"):
        for j in level:
            for k in level:
                if j != k:
                    assert not set(selected[j].moving_atoms) & (set(selected[k].moving_atoms)
                                                                | set(selected[k].atoms))


def lysozyme():
    path = "data/T4-lysozyme-L99A-implicit/receptor"
    prmtop = app.AmberPrmtopFile(testsystems.get_data_filename(path + ".prmtop"))
    inpcrd = app.AmberInpcrdFile(testsystems.get_data_filename(path + ".crd"))
    return prmtop, inpcrd


def test_proline_phi_is_skipped_and_refused_when_asked_for():
    prmtop, _ = lysozyme()
    topology = prmtop.topology
    selected = select_torsions(topology)
    n_res = topology.getNumResidues()
    prolines = [r.index for r in topology.residues() if r.name == "PRO"]
    assert prolines, "the lysozyme fixture must contain prolines"
    names = [t.name for t in selected]
    assert sum(n.startswith("phi PRO") for n in names) == 0
    assert sum(n.startswith("psi") for n in names) == n_res - 1
    atoms = {a.name: a.index for a in list(topology.residues())[prolines[0]].atoms()}
    previous_c = [a.index for a in list(topology.residues())[prolines[0] - 1].atoms() if a.name == "C"][0]
    with pytest.raises(ValueError, match="in a ring"):
        select_torsions(topology, np.array([[previous_c, atoms["N"], atoms["CA"], atoms["C"]]]))


def test_bad_torsions_are_refused_with_the_reason():
    ala2 = systems.get("alanine_dipeptide_vacuum")
    with pytest.raises(ValueError, match="not a bonded chain"):
        select_torsions(ala2.topology, np.array([[0, 4, 6, 8]]))
    with pytest.raises(ValueError, match="another topology"):
        select_torsions(ala2.topology, np.array([[4, 6, 8, 40]]))
    with pytest.raises(ValueError, match="one of"):
        select_torsions(ala2.topology, "sidechains")
    particles = systems.get("dw4")
    with pytest.raises(ValueError, match="no pivotable"):
        select_torsions(particles.topology)


# ---------------------------------------------------------------------- geometry and force
def test_pivot_keeps_bonds_and_sets_the_dihedral_exactly():
    ala2 = systems.get("alanine_dipeptide_vacuum")
    x = ala2.positions.value_in_unit(unit.nanometer).astype(np.float64)
    bonds = np.array([(b[0].index, b[1].index) for b in ala2.topology.bonds()])
    torsion = select_torsions(ala2.topology)[0]
    before = dihedrals(x, [torsion.atoms])[0]
    y = pivot(x.copy(), torsion, 1.234)
    np.testing.assert_allclose(np.linalg.norm(y[bonds[:, 0]] - y[bonds[:, 1]], axis=1),
                               np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1), atol=1e-12)
    assert abs(np.angle(np.exp(1j * (dihedrals(y, [torsion.atoms])[0] - before - 1.234)))) < 1e-10


def test_kernel_force_energy_matches_its_formula_and_openmm_dihedrals():
    ala2 = systems.get("alanine_dipeptide_vacuum")
    torsions = select_torsions(ala2.topology)
    force = build_kernel_force(torsions, False, 5)
    force.setTorsionParameters(0, *torsions[0].atoms, [2.0, 0.3])
    force.setTorsionParameters(1, *torsions[1].atoms, [0.5, -2.0])
    system = openmm.System()
    for _ in range(ala2.n_particles):
        system.addParticle(1.0)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setParameter("digs_kernel_kT", KT_300)
    x = ala2.positions.value_in_unit(unit.nanometer)
    context.setPositions(x)
    theta = dihedrals(np.asarray(x, dtype=float), [t.atoms for t in torsions])
    expected = KT_300 * (2.0 * (1 - np.cos(theta[0] - 0.3)) + 0.5 * (1 - np.cos(theta[1] + 2.0)))
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------------- exactness
@pytest.mark.parametrize("constrained", [False, True])
def test_toy_torsion_distribution_matches_quadrature(constrained):
    """φ moments of 8000 sweeps (seeded, Reference) within 4 batch-means standard errors.

    8000 sweeps keep the well-balance moment (sin φ) below the 0.05 power bound for every
    seed tried (21 seeds: largest standard error 0.040; at 3000 sweeps 8 of 40 cases
    exceeded it)."""
    engine = toy_engine(constrained, "Reference", seed=11)
    phi = sample_phi(engine, 8000)
    exact = exact_moments()
    for name, f in MOMENTS.items():
        batches = f(phi).reshape(20, -1).mean(axis=1)
        error = batches.std(ddof=1) / np.sqrt(len(batches))
        assert error < 0.05, f"{name}: the test has no power (standard error {error:.3f})"
        assert abs(f(phi).mean() - exact[name]) < 4 * error + 1e-3, (name, f(phi).mean(), exact[name])
    rates = engine.statistics
    assert 0.1 < rates["init_accepted"][0] / rates["init_proposed"][0] < 0.9
    if constrained:
        x = engine._positions()
        for i, j in ((0, 1), (2, 3)):
            assert np.linalg.norm(x[i] - x[j]) == pytest.approx(0.15, rel=1e-5)


def test_force_evaluations_are_counted_exactly():
    engine = toy_engine(False, "Reference", seed=2, n_denoise_steps=3)
    engine.sweep(50)
    s = engine.statistics
    rejected = int(s["init_proposed"].sum() - s["init_accepted"].sum())
    # 1 to start, per level 1 proposal + 3 GHMC steps, + 1 per rejected pivot
    assert engine.force_evaluations == 1 + 50 * (1 + 3) + rejected
    assert int(s["denoise_proposed"].sum()) == 150


def test_same_seed_same_chain_and_platforms_agree(openmm_platforms):
    """Pivot-only chains (host randomness only) agree with Reference on every platform."""
    reference = toy_engine(True, "Reference", seed=5, n_denoise_steps=0)
    other = toy_engine(True, openmm_platforms, seed=5, n_denoise_steps=0)
    a, b = sample_phi(reference, 200), sample_phi(other, 200)
    # single/mixed precision energies may flip an MH decision only at a near-tie
    assert np.mean(np.abs(np.angle(np.exp(1j * (a - b)))) < 1e-4) > 0.95
    np.testing.assert_array_equal(reference.statistics["init_accepted"],
                                  other.statistics["init_accepted"])


def test_denoising_on_every_platform_matches_quadrature(openmm_platforms):
    """With GHMC denoising and constraints, each platform's φ mean is exact (looser: 1000 sweeps)."""
    engine = toy_engine(True, openmm_platforms, seed=21)
    phi = sample_phi(engine, 1000)
    exact = exact_moments()
    batches = np.cos(2 * phi).reshape(10, -1).mean(axis=1)
    error = batches.std(ddof=1) / np.sqrt(len(batches))
    assert abs(np.cos(2 * phi).mean() - exact["cos2"]) < 4 * error + 2e-3


def test_commuting_torsions_in_one_level_are_exact():
    """A 5-atom chain: both torsions pivot in one level (disjoint grouping); each φ marginal
    is exp(−V/kT) (the torsion terms are independent, the Jacobian has no dihedral)."""
    topology = app.Topology()
    residue = topology.addResidue("TOY", topology.addChain())
    atoms = [topology.addAtom(f"C{i}", app.element.carbon, residue) for i in range(5)]
    system = openmm.System()
    bonds, angles, torsion = (openmm.HarmonicBondForce(), openmm.HarmonicAngleForce(),
                              openmm.PeriodicTorsionForce())
    for i in range(5):
        system.addParticle(12.0)
    for i in range(4):
        topology.addBond(atoms[i], atoms[i + 1])
        bonds.addBond(i, i + 1, 0.15, 2e5)
    for i in range(3):
        angles.addAngle(i, i + 1, i + 2, 1.9, 400.0)
    for quad in ((0, 1, 2, 3), (1, 2, 3, 4)):
        for n, k in TOY_TERMS:
            torsion.addTorsion(*quad, n, 0.0, k)
    for force in (bonds, angles, torsion):
        system.addForce(force)
    quads = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
    torsions = select_torsions(topology, quads)
    levels = torsion_levels(torsions, "disjoint")
    assert levels == [[0, 1]]
    engine = TorsionalDiGSEngine(system, torsions, levels, np.pi, 300.0, timestep=0.002,
                                 n_denoise_steps=3, platform="Reference", seed=4)
    engine.set_positions(np.array([[0.1, 0.1, 0.0], [0.0, 0.0, 0.0], [0.15, 0.0, 0.0],
                                   [0.2, 0.14, 0.0], [0.35, 0.15, 0.05]]))
    phi = []
    for _ in range(3000):
        engine.sweep(1)
        phi.append(dihedrals(engine._positions(), quads))
    phi = np.array(phi)
    exact = exact_moments()["cos2"]
    for j in range(2):
        values = np.cos(2 * phi[:, j])
        error = values.reshape(20, -1).mean(axis=1).std(ddof=1) / np.sqrt(20)
        assert error < 0.05
        assert abs(values.mean() - exact) < 4 * error + 1e-3, (j, values.mean(), exact)
