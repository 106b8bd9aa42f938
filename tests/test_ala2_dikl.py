"""DiKL on alanine dipeptide: the internal-coordinate generator, its checkpoints, and
DiKL iterations with live OpenMM forces (implicit solvent) and with ANI-1x (bridge vs twin)."""
import numpy as np
import pytest
import torch

from openmm_dikl import systems
from openmm_dikl.dikl import DiKLConfig, DiKLTrainer, load_sampler, save_sampler
from openmm_dikl.nn import InternalCoordinateGenerator, PairScore, build_model

_TORSIONS = systems.get("alanine_dipeptide_vacuum").torsions
ALANINE_PHI, ALANINE_PSI = tuple(_TORSIONS["phi"][0]), tuple(_TORSIONS["psi"][0])


@pytest.fixture(scope="module")
def implicit():
    return systems.get("alanine_dipeptide_implicit")


def models(target, seed=0, hidden=32):
    torch.manual_seed(seed)
    generator = InternalCoordinateGenerator.alanine_dipeptide(target.positions, target.topology,
                                                              hidden=hidden,
                                                              n_layers=2)
    return generator, PairScore(22, 3, hidden=hidden, n_layers=2,
                                reference=target.positions._value)


def small_config(**overrides):
    settings = dict(n_levels=5, beta_min=4e-6, beta_max=1e-3, batch_size=6, score_batch_size=8,
                    score_steps_per_iter=2, n_importance=3, n_ais_steps=1, n_mala_steps=2,
                    mala_init_step=0.1, weighting="sigma2", n_iterations=2,
                    checkpoint_every=0, seed=3, use_bridge=True)
    settings.update(overrides)
    return DiKLConfig.from_dict(settings)


def bonds(topology):
    return np.array([(a.index, b.index) for a, b in topology.bonds()])


def test_generator_gives_centred_molecules_with_sane_geometry(implicit):
    generator, _ = models(implicit)
    with torch.no_grad():
        x = generator.sample(400, generator=torch.Generator().manual_seed(0)).double()
    assert x.shape == (400, 22, 3) and torch.isfinite(x).all()
    assert x.mean(1).abs().max() < 1e-6                              # centred (nm)
    pairs = bonds(implicit.topology)
    assert len(pairs) == 21
    length = torch.linalg.norm(x[:, pairs[:, 0]] - x[:, pairs[:, 1]], dim=-1)
    reference = torch.linalg.norm(torch.as_tensor(implicit.positions._value)[pairs[:, 0]]
                                  - torch.as_tensor(implicit.positions._value)[pairs[:, 1]],
                                  dim=-1)
    # bonds are 3 pm perturbations of the reference (C-H 0.109 nm ... C-C 0.153 nm)
    assert (length - reference).abs().max() < 0.02
    assert 0.09 < float(length.min()) and float(length.max()) < 0.17
    spread = (length - reference).std(0)
    assert ((spread > 0.002) & (spread < 0.004)).all()
    # backbone dihedrals are wide (1 rad), the amide planes stiff (0.1 rad)
    q = generator.ic.to_internal(x)[0]
    for atoms, width in ((ALANINE_PHI, 1.0), (ALANINE_PSI, 1.0), ((5, 4, 6, 8), 0.1)):
        k = generator.ic.coordinate_index(atoms)
        deviation = q[:, k] - generator.q_reference[k].double()
        deviation = torch.atan2(deviation.sin(), deviation.cos())
        assert 0.8 * width < float(deviation.std()) < 1.25 * width
    # random orientation: the N -> C(alanine) unit vector has no preferred direction
    axis = x[:, 14] - x[:, 6]
    axis = axis / torch.linalg.norm(axis, dim=-1, keepdim=True)
    assert axis.mean(0).norm() < 0.15


def test_generator_internal_coordinates_and_rotation(implicit):
    generator, _ = models(implicit)
    generator = generator.double()
    z = torch.randn(5, 22, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = generator(z)
    q, _ = generator.ic.to_internal(x)
    expected = generator.internal(z)
    d = generator.ic.dihedral_index
    other = torch.ones(60, dtype=torch.bool)
    other[d] = False
    assert torch.allclose(q[:, other], expected[:, other], atol=1e-9)
    wrapped = torch.remainder(q[:, d] - expected[:, d] + np.pi, 2 * np.pi) - np.pi
    assert wrapped.abs().max() < 1e-9
    # the rotation latent (entries 60..63) rotates the molecule rigidly and nothing else
    z2 = z.clone().reshape(5, -1)
    z2[:, 60:64] = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x2 = generator(z2.reshape(5, 22, 3))
    assert torch.allclose(torch.cdist(x2, x2), torch.cdist(x, x), atol=1e-9)
    assert not torch.allclose(x2, x, atol=1e-3)


def test_generator_bad_arguments(implicit):
    reference = implicit.positions._value
    generator, _ = models(implicit)
    with pytest.raises(ValueError, match="scale"):
        InternalCoordinateGenerator(reference, generator.ic.roots, generator.ic.placed,
                                    np.ones(59))
    with pytest.raises(ValueError, match="reference"):
        InternalCoordinateGenerator(np.zeros((22, 2)), generator.ic.roots, generator.ic.placed,
                                    np.ones(60))
    with pytest.raises(ValueError, match="z must have shape"):
        generator(torch.zeros(2, 21, 3))


def test_sampler_round_trip(implicit, tmp_path):
    generator, _ = models(implicit)
    with torch.no_grad():
        for p in generator.net.parameters():      # non-trivial weights (the last layer starts at 0)
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(4)))
    copy = build_model(generator.config)
    copy.load_state_dict(generator.state_dict())
    path = tmp_path / "ala2.pt"
    save_sampler(path, implicit.name, generator, {"note": "test"}, centre=True)
    sampler = load_sampler(path, target=implicit.name)
    assert type(sampler.generator) is InternalCoordinateGenerator
    a = sampler.sample(16, seed=7)
    with torch.no_grad():
        b = copy.sample(16, generator=torch.Generator().manual_seed(7)).double()
    assert torch.allclose(a, b, atol=1e-6)
    traj = sampler.to_mdtraj(4, seed=1)
    assert traj.n_atoms == 22 and traj.n_frames == 4


def test_dikl_iterations_with_openmm_forces(implicit, tmp_path):
    generator, score = models(implicit)
    trainer = DiKLTrainer(implicit, generator, score, small_config())
    try:
        assert trainer.energy_and_force.uses_bridge and trainer.centre
        before = [p.detach().clone() for p in generator.parameters()]
        rows = trainer.train(out_dir=tmp_path, progress=False)
    finally:
        trainer.close()
    assert len(rows) == 2
    for row in rows:
        assert np.isfinite(row["dsm_loss"]) and np.isfinite(row["score_gap"])
        assert row["energy_evaluations"] > 0 and row["skipped_steps"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, generator.parameters()))
    sampler = load_sampler(tmp_path / "sampler.pt", target=implicit)
    assert torch.isfinite(sampler.sample(8, seed=0)).all()


def test_ala2_metrics_record_angles_and_energy(implicit):
    from openmm_dikl.analysis.evaluation import ala2_metrics
    generator, _ = models(implicit)
    with torch.no_grad():
        x = generator.sample(500, generator=torch.Generator().manual_seed(5))
    result = ala2_metrics(implicit, x)
    for key in ("kl_phi", "kl_psi", "kl_ramachandran", "energy_tvd"):
        assert result[key] > result[key + "_floor"] >= 0.0
    # a fresh generator puts ~25 % of φ > 0; the 300 K reference has 0.3 %
    assert result["fraction_phi_positive"] > 0.1 > result["reference_fraction_phi_positive"]


def test_bridge_and_twin_give_the_same_dikl_gradient_on_ani():
    """ANI-1x as a torch function vs inside OpenMM (PythonForce through the bridge)."""
    target = systems.get("alanine_dipeptide_ani")
    assert target.has_torch_twin
    grads, scores = {}, {}
    for use_bridge in (False, True):
        generator, score = models(target)
        config = small_config(batch_size=3, n_importance=2, n_ais_steps=1, n_mala_steps=1,
                              use_bridge=use_bridge)
        trainer = DiKLTrainer(target, generator, score, config)
        try:
            assert trainer.energy_and_force.uses_bridge is use_bridge
            loss, stats = trainer.generator_loss()
            loss.backward()
        finally:
            trainer.close()
        grads[use_bridge] = torch.cat([p.grad.flatten() for p in generator.parameters()])
        scores[use_bridge] = stats["score_gap"]
    twin, bridge = grads[False], grads[True]
    assert twin.abs().max() > 0 and np.isfinite(scores[False])
    assert torch.allclose(bridge, twin, rtol=1e-5, atol=1e-5 * float(twin.abs().max()))
    assert scores[True] == pytest.approx(scores[False], rel=1e-6)


def test_shipped_generator_exports_mdtraj_and_generates_refined_dcd(implicit, tmp_path, capsys):
    """The shipped alanine dipeptide generator: to_mdtraj gives the system's topology, and
    ``generate --refine`` runs the torsional DiGS kernel (the system's default) and writes
    a DCD with its PDB."""
    import mdtraj

    from openmm_dikl.cli import main
    sampler = load_sampler("alanine_dipeptide_implicit")
    traj = sampler.to_mdtraj(16, seed=3)
    assert isinstance(traj, mdtraj.Trajectory) and traj.n_frames == 16
    assert [r.name for r in traj.topology.residues] == ["ACE", "ALA", "NME"]
    assert traj.n_atoms == 22 and np.isfinite(traj.xyz).all()
    energies = implicit.bridge().reduced_energy(torch.as_tensor(traj.xyz, dtype=torch.float64))
    assert np.isfinite(np.asarray(energies)).all()
    out = tmp_path / "ala2.dcd"
    assert main(["generate", "alanine_dipeptide_implicit", "-n", "8", "--out", str(out),
                 "--refine", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "refined with 3 digs steps" in printed
    assert mdtraj.load(str(out), top=str(tmp_path / "ala2.pdb")).n_frames == 8
