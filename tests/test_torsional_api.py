"""TorsionalDiffusiveGibbsMove / TorsionalDiffusiveGibbsSimulation in OpenMM workflows."""
import csv
import logging
import pickle
import re

import mdtraj
import numpy as np
import openmm
import pytest
from openmm import app, unit
from openmmtools import cache, mcmc, multistate, states, utils

from openmm_dikl import TorsionalDiffusiveGibbsMove, TorsionalDiffusiveGibbsSimulation, systems
from openmm_dikl.samplers import run_sampler


def ala2_hbonds():
    """Alanine dipeptide, amber14 + OBC2, HBonds constraints (as most OpenMM scripts use)."""
    pdb = app.PDBFile(systems.shipped_path("alanine_dipeptide.pdb"))
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                     constraints=app.HBonds)
    return pdb.topology, system, pdb.positions


def constraint_errors(system, positions):
    x = np.asarray(positions.value_in_unit(unit.nanometer))
    errors = []
    for k in range(system.getNumConstraints()):
        i, j, d = system.getConstraintParameters(k)
        errors.append(abs(np.linalg.norm(x[i] - x[j]) - d.value_in_unit(unit.nanometer)))
    return np.array(errors)


def test_move_keeps_hbond_constraints_and_reports_statistics():
    topology, system, positions = ala2_hbonds()
    thermodynamic_state = states.ThermodynamicState(system, 300 * unit.kelvin)
    sampler_state = states.SamplerState(positions)
    move = TorsionalDiffusiveGibbsMove(topology, n_sweeps=20, n_denoise_steps=2,
                                       timestep=2 * unit.femtoseconds, random_seed=4)
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("CPU"))
    move.apply(thermodynamic_state, sampler_state, context_cache)
    assert system.getNumConstraints() > 0
    assert constraint_errors(system, sampler_state.positions).max() < 1e-5
    stats = move.statistics
    assert stats["init_proposed"].tolist() == [20, 20]
    assert (stats["init_accepted"] > 0).all()
    assert stats["denoise_proposed"].tolist() == [40, 40]
    assert 0.5 < move.acceptance_rates["denoising"].min() <= 1.0
    # energy of the user's System (no kernel) at the new positions
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(sampler_state.positions)
    expected = context.getState(getEnergy=True).getPotentialEnergy()
    assert sampler_state.potential_energy.value_in_unit(unit.kilojoule_per_mole) == pytest.approx(
        expected.value_in_unit(unit.kilojoule_per_mole), abs=1e-2)
    rejected = int((stats["init_proposed"] - stats["init_accepted"]).sum())
    assert move.force_evaluations == 1 + 40 * (1 + 2) + rejected + 1


def test_move_serializes_pickles_and_composes_with_langevin():
    topology, system, positions = ala2_hbonds()
    move = TorsionalDiffusiveGibbsMove(topology, n_sweeps=2, n_denoise_steps=1, random_seed=9)
    thermodynamic_state = states.ThermodynamicState(system, 300 * unit.kelvin)
    sampler_state = states.SamplerState(positions)
    move.apply(thermodynamic_state, sampler_state)
    for copy in (pickle.loads(pickle.dumps(move)), utils.deserialize(utils.serialize(move))):
        assert isinstance(copy, TorsionalDiffusiveGibbsMove)
        assert copy.statistics["init_proposed"].tolist() == [2, 2]
        assert copy.force_evaluations == move.force_evaluations
        assert [t.atoms for t in copy.torsions] == [t.atoms for t in move.torsions]
    sequence = mcmc.SequenceMove([move, mcmc.LangevinDynamicsMove(
        timestep=2 * unit.femtoseconds, n_steps=10)])
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("CPU"))
    sampler = mcmc.MCMCSampler(thermodynamic_state, sampler_state, sequence)
    sampler.run(2, context_cache=context_cache)
    assert move.statistics["init_proposed"].tolist() == [6, 6]
    restored = utils.deserialize(utils.serialize(sequence))
    assert isinstance(restored.move_list[0], TorsionalDiffusiveGibbsMove)


def test_move_in_replica_exchange(tmp_path):
    """DiGS + replica exchange: two temperatures share one engine; energies stored are finite."""
    topology, system, positions = ala2_hbonds()
    move = TorsionalDiffusiveGibbsMove(topology, n_sweeps=2, n_denoise_steps=1, random_seed=3)
    temperatures = [300.0, 400.0]
    thermodynamic_states = [states.ThermodynamicState(system, t * unit.kelvin) for t in temperatures]
    sampler = multistate.ReplicaExchangeSampler(mcmc_moves=move, number_of_iterations=3)
    reporter = multistate.MultiStateReporter(str(tmp_path / "re.nc"), checkpoint_interval=1)
    sampler.energy_context_cache = cache.ContextCache(
        platform=openmm.Platform.getPlatformByName("CPU"))
    sampler.sampler_context_cache = cache.ContextCache(
        platform=openmm.Platform.getPlatformByName("CPU"))
    sampler.create(thermodynamic_states, states.SamplerState(positions), reporter)
    sampler.run()
    energies, _, _ = reporter.read_energies(iteration=3)
    assert np.isfinite(energies).all()
    reporter.close()
    applied = sampler.mcmc_moves
    total = sum(int(m.statistics["init_proposed"].sum()) for m in applied)
    assert total == len(temperatures) * 3 * 2 * 2   # replicas × iterations × sweeps × levels


def test_simulation_wrapper_with_reporters(tmp_path):
    topology, system, positions = ala2_hbonds()
    simulation = TorsionalDiffusiveGibbsSimulation(topology, system, 300.0, platform="CPU",
                                                   n_denoise_steps=1, random_seed=1)
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=20)
    dcd, log = tmp_path / "digs.dcd", tmp_path / "digs.csv"
    simulation.reporters.append(app.DCDReporter(str(dcd), 5))
    simulation.reporters.append(app.StateDataReporter(str(log), 5, step=True,
                                                      potentialEnergy=True, temperature=True))
    simulation.step(10)
    assert simulation.currentStep == 10
    del simulation.reporters[:]
    traj = mdtraj.load_dcd(str(dcd), top=mdtraj.Topology.from_openmm(topology))
    assert traj.n_frames == 2
    rows = list(csv.reader(open(log)))
    assert [int(r[0]) for r in rows[1:]] == [5, 10]
    assert all(np.isfinite(float(r[1])) and float(r[1]) < 0 for r in rows[1:])
    # the reported energy is the user's System's (no kernel), at the reported positions
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(simulation.context.getState(getPositions=True).getPositions())
    final = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert float(rows[-1][1]) == pytest.approx(final, abs=0.05)
    assert constraint_errors(system, simulation.context.getState(getPositions=True)
                             .getPositions(asNumpy=True)).max() < 1e-5


def test_bad_systems_are_refused_before_anything_runs():
    topology, system, positions = ala2_hbonds()
    move = TorsionalDiffusiveGibbsMove(topology, random_seed=1)
    other = systems.get("dw4")
    with pytest.raises(ValueError, match="another topology"):
        move.apply(states.ThermodynamicState(other.system, 300 * unit.kelvin),
                   states.SamplerState(other.positions))
    with pytest.raises(ValueError, match="virtual sites"):
        TorsionalDiffusiveGibbsSimulation(topology, _virtual_site_system(system), 300.0)


def _virtual_site_system(system):
    copy = openmm.XmlSerializer.clone(system)
    copy.setVirtualSite(0, openmm.TwoParticleAverageSite(1, 2, 0.5, 0.5))
    return copy


def test_cli_path_samples_a_constrained_pdb(tmp_path):
    topology, system, positions = ala2_hbonds()
    target = systems.from_openmm(system, topology, positions, 300.0, platform="CPU")
    result = run_sampler(target, method="digs", force_evals=400, out=str(tmp_path / "s.dcd"),
                         n_frames=4, progress=False)
    assert result.force_evaluations <= 400 and result.n_frames == 4
    traj = mdtraj.load_dcd(str(tmp_path / "s.dcd"), top=str(tmp_path / "s.pdb"))
    assert traj.n_frames == 4
    with pytest.raises(ValueError, match="constraints"):
        run_sampler(target, method="mala", force_evals=100, out=str(tmp_path / "m.dcd"),
                    progress=False)


def test_move_warns_when_pivots_are_almost_never_accepted(caplog):
    """A stiff restraint on φ makes σ = π pivots fail, as water does for a protein's backbone."""
    topology, system, positions = ala2_hbonds()
    move = TorsionalDiffusiveGibbsMove(topology, n_sweeps=110, n_denoise_steps=0, random_seed=2)
    phi = move.torsions[0].atoms
    restraint = openmm.CustomTorsionForce("5000*(1 - cos(theta - theta0))")
    restraint.addPerTorsionParameter("theta0")
    x = np.asarray(positions.value_in_unit(unit.nanometer))
    from openmm_dikl.samplers.torsional import dihedrals
    restraint.addTorsion(*phi, [float(dihedrals(x, [phi])[0])])
    system.addForce(restraint)
    with caplog.at_level(logging.WARNING, logger="openmm_dikl.samplers.torsional_move"):
        move.apply(states.ThermodynamicState(system, 300 * unit.kelvin), states.SamplerState(positions))
    rates = move.acceptance_rates["initialisation"]
    assert rates[0] < 0.01 and rates[1] > 0.05
    assert "1 of 2 levels (phi ALA2)" in caplog.text and "explicit solvent" in caplog.text


def test_peptide_reference_script_resumes_and_writes_the_benchmark_file(tmp_path, capsys,
                                                                        load_benchmark):
    """benchmarks/peptide_reference.py (DiGS + replica exchange, openmmtools storage):
    two parts of 3 iterations give the file of 6, with the time of both parts; an
    existing storage without --resume is refused and nothing is written."""
    script = load_benchmark("peptide_reference")
    storage, out = str(tmp_path / "re.nc"), str(tmp_path / "ref.npz")
    common = ["--system", "alanine_dipeptide_implicit", "--replicas", "2", "--sweeps", "1",
              "--langevin-steps", "2", "--chunk", "3", "--storage", storage, "--out", out]
    assert script.main(common + ["--iterations", "3"]) == 0
    first = dict(np.load(out))
    with pytest.raises(SystemExit, match="exists: pass --resume"):
        script.main(common + ["--iterations", "6"])
    assert script.main(common + ["--iterations", "6", "--resume",
                                 "--check", out]) == 0
    data = np.load(out)
    assert data["phi"].shape == data["psi"].shape == (6, 1)  # one residue, one frame per iteration
    assert np.array_equal(data["phi"][:3], first["phi"])     # the resumed run kept its start
    assert data["positions"].shape == (1, 22, 3) and np.all(np.isfinite(data["energy_kjmol"]))
    assert data["wall_seconds"] > first["wall_seconds"] > 0
    assert data["force_evaluations"] > first["force_evaluations"] > 0
    assert data["temperatures"].shape == (2,) and data["exchange_acceptance"].shape == (1,)
    out_text = capsys.readouterr().out
    assert "resumed" in out_text and "iteration 6 / 6" in out_text
    assert re.search(r"KL\(ref\.npz \|\| this\) per residue: \d+\.\d{3}$", out_text, re.M)
