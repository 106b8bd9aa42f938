"""DiKL: posterior sampler, mode covering, OpenMM vs torch forces, config, checkpoints,
samplers."""
import copy
import csv
import filecmp
import json
import math
import os

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit
from torch import nn

from openmm_dikl import systems
from openmm_dikl.analysis.evaluation import evaluation_metrics
from openmm_dikl.dikl import (BUNDLED_SAMPLERS, CheckpointError, DiKLConfig, DiKLTrainer,
                              PosteriorSampler, check_checkpoint, load_sampler, save_sampler)
from openmm_dikl.dikl.config import ScheduleConfig
from openmm_dikl.dikl.diffusion import clip_per_particle, mixed_score_identity
from openmm_dikl.dikl.spaces import diffusion_space
from openmm_dikl.dikl.training_log import CSVLog
from openmm_dikl.energy import EnergyAndForce
from openmm_dikl.geometry import remove_mean
from openmm_dikl.nn import EGNNGenerator, EGNNScore, MLPGenerator, MLPScore, build_model
from openmm_dikl.systems import TargetSystem

from test_diffusion import MIX, mixture_force, mixture_posterior

F64 = torch.float64
SHIPPED = os.path.join(os.path.dirname(__file__), "..", "systems")


def config(**settings):
    """A DiKLConfig from flat settings (the layout of the recipes)."""
    return DiKLConfig.from_dict(settings)


def autograd_forces(target):
    """(u, −∇u) of a torch-only test target (not a TargetSystem) by autograd."""
    def energy_and_force(x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            u = target.reduced_energy(x)
            (grad,) = torch.autograd.grad(u.sum(), x)
        return u.detach(), -grad
    return energy_and_force


def trainer_for(target, generator, score, settings):
    """A trainer on a torch-only test target, forces by autograd."""
    return DiKLTrainer(target, generator, score, settings,
                       energy_and_force=autograd_forces(target))


@pytest.fixture(scope="module")
def dw4():
    return systems.get("dw4")


def mixture_energy_and_force(x):
    """u and −∇u of the 1-D mixture MIX for x (B, 1, 1)."""
    xx = x[..., 0, 0]
    means, stds, weights = MIX["means"], MIX["stds"], MIX["weights"]
    log_c = torch.log(weights) - torch.log(stds) - (xx[..., None] - means) ** 2 / (2 * stds**2)
    return -torch.logsumexp(log_c, -1), mixture_force(xx)[..., None, None]


# ---------------------------------------------------------------------- posterior sampler
@pytest.mark.parametrize("alpha", [0.95, 0.6, 0.2])
def test_posterior_sampler_msi_matches_mixture_score(alpha):
    """IS + AIS + MALA posterior samples give the exact noisy score within MC error."""
    sigma = math.sqrt(1 - alpha**2)
    points = torch.tensor([-1.9, -0.5, 0.0, 0.4, 1.4], dtype=F64) * max(alpha, 0.5)
    exact = mixture_posterior(points, alpha, sigma, **MIX)[0]
    repeats = 2000
    x_t = points.repeat_interleave(repeats)[:, None, None]
    groups = torch.arange(5).repeat_interleave(repeats)
    sampler = PosteriorSampler(mixture_energy_and_force, n_importance=20, n_ais_steps=3,
                               n_mala_steps=20)
    out = sampler.sample(x_t, alpha, sigma, torch.full((5,), 0.01),
                         torch.Generator().manual_seed(0), groups)
    assert out.samples.shape == (1, 5 * repeats, 1, 1) and out.weights is None
    msi = mixed_score_identity(x_t, out.samples, out.forces, alpha, sigma)[:, 0, 0]
    per_point = msi.reshape(5, repeats)
    se = per_point.std(1) / math.sqrt(repeats)
    assert ((per_point.mean(1) - exact).abs() < 5 * se).all(), (per_point.mean(1), exact, se)
    assert sampler.n_evaluations == 5 * repeats * (20 + 20 * 3 + 20)
    assert out.step_size.shape == (5,) and (out.step_size > 0.01).all()


def test_posterior_sampler_weights_and_adaptation():
    """Without resampling the K weighted particles are returned; step sizes adapt to [0.5, 0.6]."""
    alpha, sigma = 0.8, 0.6
    x_t = torch.tensor([-1.0, 0.5, 1.2], dtype=F64).repeat(200)[:, None, None]
    sampler = PosteriorSampler(mixture_energy_and_force, n_importance=8, n_mala_steps=150,
                               resample=False)
    out = sampler.sample(x_t, alpha, sigma, 1e-4, torch.Generator().manual_seed(1),
                         groups=torch.zeros(600, dtype=torch.long))
    assert out.samples.shape == (8, 600, 1, 1) and out.weights.shape == (8, 600)
    assert torch.allclose(out.weights.sum(0), torch.ones(600, dtype=F64))
    assert out.step_size.shape == (1,)
    # adapted from 1e-4: the last steps run at an acceptance inside (or next to) the band
    last = sampler.sample(x_t, alpha, sigma, out.step_size, torch.Generator().manual_seed(2),
                          groups=torch.zeros(600, dtype=torch.long))
    assert 0.45 < float(last.acceptance.mean()) < 0.65
    exact = mixture_posterior(x_t[:3, 0, 0], alpha, sigma, **MIX)[0]
    msi = mixed_score_identity(x_t, out.samples, out.forces, alpha, sigma, out.weights)
    assert torch.allclose(msi[:, 0, 0].reshape(200, 3).mean(0), exact, atol=0.05)


def test_posterior_sampler_centred_and_validation(dw4):
    forces = EnergyAndForce(dw4)
    x_t = torch.as_tensor(dw4.reference_samples(6)) * 0.9
    x_t = x_t - x_t.mean(1, keepdim=True)
    sampler = PosteriorSampler(forces, n_importance=4, n_ais_steps=2, n_mala_steps=5, centre=True)
    out = sampler.sample(x_t, 0.9, math.sqrt(0.19), 0.01, torch.Generator().manual_seed(0))
    assert out.samples.sum(-2).abs().max() < 1e-10
    with pytest.raises(ValueError, match="n_importance"):
        PosteriorSampler(forces, n_importance=0)
    with pytest.raises(ValueError, match="acceptance_range"):
        PosteriorSampler(forces, acceptance_range=(0.7, 0.5))
    with pytest.raises(ValueError, match="groups"):
        sampler.sample(x_t, 0.9, 0.4, torch.ones(2), groups=torch.arange(6))


# ---------------------------------------------------------------------- mode covering
class TwoModes:
    """p(x) = ½ N(−3, 0.5²) + ½ N(3, 0.5²) in 1-D (one particle), a torch-only target."""

    name = "two_modes_1d"
    n_particles = 1
    spatial_dim = 1
    translation_invariant = False

    def reduced_energy(self, x):
        x = torch.as_tensor(x, dtype=F64)[..., 0, 0]
        means = torch.tensor([-3.0, 3.0], dtype=F64)
        return -torch.logsumexp(-(x[..., None] - means) ** 2 / 0.5, -1)


class ShiftedGenerator(nn.Module):
    """x = shift + 0.3 · MLP(z): starts inside the left mode only."""

    def __init__(self):
        super().__init__()
        self.net = MLPGenerator(1, 1, hidden=32, n_layers=2)
        self.shift = nn.Parameter(torch.tensor(-3.0))
        self.n_particles, self.spatial_dim = 1, 1

    def sample(self, n, generator=None):
        return self.shift + 0.3 * self.net.sample(n, generator)


def train_two_modes(n_levels, beta_min, beta_max, iterations):
    torch.manual_seed(0)  # network initialisation only; training uses the trainer's generator
    generator, score = ShiftedGenerator(), MLPScore(1, 1, hidden=64, n_layers=2)
    settings = config(n_levels=n_levels, beta_min=beta_min, beta_max=beta_max, batch_size=256,
                      lr_generator=3e-3, lr_score=3e-3, score_steps_per_iter=10,
                      n_importance=20, n_ais_steps=0, n_mala_steps=10, seed=0)
    trainer = trainer_for(TwoModes(), generator, score, settings)
    assert trainer.centre is False
    trainer.train(iterations, progress=False)
    with torch.no_grad():
        return generator.sample(4000, torch.Generator().manual_seed(1))[:, 0, 0]


def test_dikl_covers_both_modes_where_single_small_level_collapses():
    """Many noise levels (α down to 0.21) find the second mode; one tiny level (≈ reverse
    KL) cannot."""
    covering = train_two_modes(10, 1e-3, 0.5, iterations=350)
    right = float((covering > 0).double().mean())
    near_a_mode = float(((covering.abs() - 3).abs() < 1.5).double().mean())
    assert 0.3 < right < 0.7, right
    # the target has 0.997 of its mass there, one wide Gaussian over both modes about 0.5
    assert near_a_mode > 0.8, near_a_mode

    seeking = train_two_modes(1, 1e-3, 0.5, iterations=200)  # single level: σ = 0.03
    assert float((seeking > 0).double().mean()) < 0.01
    assert abs(float(seeking.mean()) + 3) < 0.2 and 0.35 < float(seeking.std()) < 0.65


class ScaledTwoModes(TwoModes):
    """TwoModes stretched by a factor c: u_c(x) = u(x / c) (modes at ±3c nm)."""

    name = "two_modes_1d_scaled"

    def __init__(self, scale):
        self.scale = scale

    def reduced_energy(self, x):
        return super().reduced_energy(torch.as_tensor(x, dtype=F64) / self.scale)


class Stretched(nn.Module):
    """c · generator (a fixed factor, so the parameters are the same as the inner one's)."""

    def __init__(self, inner, scale):
        super().__init__()
        self.inner, self.scale = inner, scale
        self.n_particles, self.spatial_dim = inner.n_particles, inner.spatial_dim

    def sample(self, n, generator=None):
        return self.scale * self.inner.sample(n, generator)


def test_coordinate_scale_reproduces_the_unit_problem_on_a_stretched_target():
    """Training on a 32× larger target with coordinate_scale 32 is the same run (in y = x/32)
    as on the original: same score-network and generator weights after several steps,
    although the posterior now sees energies u(32 y) and forces 32·f(32 y) (a power of two,
    so every rescaling is exact in floating point)."""
    runs = []
    # (stretch of the target and generator, coordinate_scale); the last one diffuses the
    # stretched problem in nm, where σ <= 0.9 nm is tiny against 190 nm between the modes
    for stretch, scale in ((1.0, 1.0), (32.0, 32.0), (32.0, 1.0)):
        torch.manual_seed(0)
        generator, score = ShiftedGenerator(), MLPScore(1, 1, hidden=16, n_layers=2)
        target = TwoModes() if stretch == 1.0 else ScaledTwoModes(stretch)
        settings = config(n_levels=5, beta_min=1e-3, beta_max=0.5, batch_size=32,
                          score_steps_per_iter=2, n_importance=5, n_ais_steps=2,
                          n_mala_steps=3, coordinate_scale=scale, seed=3)
        trainer = trainer_for(target, Stretched(generator, stretch), score, settings)
        rows = [trainer.step() for _ in range(4)]
        runs.append((rows, [p.detach().clone() for p in generator.parameters()],
                     [p.detach().clone() for p in score.parameters()]))
    (rows1, gen1, score1), (rows32, gen32, score32), (_, gen_nm, score_nm) = runs
    for a, b in zip(gen1 + score1, gen32 + score32):
        assert torch.equal(a, b)
    assert [r["acceptance"] for r in rows1] == pytest.approx([r["acceptance"] for r in rows32])
    assert not all(torch.equal(a, b) for a, b in zip(gen32 + score32, gen_nm + score_nm))
    for bad in (0.0, -1.0, math.nan, math.inf, "50"):
        with pytest.raises(ValueError, match="coordinate_scale"):
            config(coordinate_scale=bad)


def test_score_clip_bounds_each_particles_contribution():
    v = torch.tensor([[[3.0, 4.0], [0.3, 0.4]], [[0.0, 0.0], [-60.0, 80.0]]], dtype=F64)
    clipped = clip_per_particle(v, 1.0)
    assert torch.allclose(clipped.norm(dim=-1), torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=F64))
    assert torch.allclose(clipped[0, 0], torch.tensor([0.6, 0.8], dtype=F64))  # direction kept
    grads = {}
    for clip in (None, 1e12, 1e-3):
        trainer = small_quadratic_trainer(score_clip=clip)
        loss, stats = trainer.generator_loss()
        loss.backward()
        grads[clip] = torch.cat([p.grad.flatten() for p in trainer.generator.parameters()])
        assert math.isfinite(stats["score_gap"])
    assert torch.equal(grads[None], grads[1e12])  # nothing above the clip: the same gradient
    # every sample's per-particle difference is at most 1e-3, so the gradient shrinks
    assert grads[1e-3].norm() < 1e-2 * grads[None].norm()
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="score_clip"):
            config(score_clip=bad)


def test_mlp_generator_output_scale():
    torch.manual_seed(0)
    plain = MLPGenerator(1, 2, hidden=8, n_layers=1)
    scaled = MLPGenerator(1, 2, hidden=8, n_layers=1, output_scale=50.0)
    scaled.load_state_dict(plain.state_dict())
    z = torch.randn(5, 1, 2)
    assert torch.allclose(scaled(z), 50.0 * plain(z))
    assert scaled.config["output_scale"] == 50.0 and "output_scale" not in plain.config
    from openmm_dikl.nn import build_model
    assert build_model(scaled.config).output_scale == 50.0
    with pytest.raises(ValueError, match="output_scale"):
        MLPGenerator(1, 2, output_scale=0.0)
    # residual: x = c (z + net(z)); a fresh one is close to N(0, c²), not a point
    residual = MLPGenerator(1, 2, hidden=8, n_layers=1, output_scale=20.0, residual=True)
    residual.load_state_dict(plain.state_dict())
    assert torch.allclose(residual(z), 20.0 * (z + plain(z)))
    assert build_model(residual.config).residual is True
    with torch.no_grad():
        x = residual.sample(4000, torch.Generator().manual_seed(0))
        assert 18.0 < float(x.std()) < 22.0 and float(plain.sample(4000).std()) < 1.0


def centred_harmonic():
    """u = 2 Σ_i |x_i − x̄|² for 3 particles in 2-D as a TargetSystem with a torch twin:
    translation invariant, Gaussian in the centred subspace with
    E Σ_i |x_i − x̄|² = (n − 1) d / 4 = 1 nm²."""
    system = openmm.System()
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(3):
        system.addParticle(1.0)
        topology.addAtom("X", app.Element.getBySymbol("Ar"), topology.addResidue("X", chain))
    positions = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]) * unit.nanometer
    return TargetSystem("centred_harmonic", system, topology, positions, 300.0, spatial_dim=2,
                        energy_fn=lambda x: 2.0 * remove_mean(x).pow(2).sum((-2, -1)))


class LinearCentredGenerator(nn.Module):
    """x = centre(A z): can represent the centred Gaussian exactly; starts 5× too narrow."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(0.2 * torch.eye(6))
        self.n_particles, self.spatial_dim = 3, 2

    def sample(self, n, generator=None):
        z = torch.randn(n, 6, generator=generator)
        return remove_mean((z @ self.weight.T).reshape(n, 3, 2))


def test_centred_dikl_fits_translation_invariant_gaussian():
    """End to end in the zero-centre-of-mass subspace (chosen because the target says it is
    translation invariant, which TargetSystem measures)."""
    torch.manual_seed(0)
    generator = LinearCentredGenerator()
    score = MLPScore(3, 2, hidden=64, n_layers=2, centre=True)
    settings = config(n_levels=10, beta_min=1e-3, beta_max=0.3, batch_size=256,
                      lr_generator=5e-3, lr_score=3e-3, score_steps_per_iter=10,
                      n_importance=10, n_ais_steps=0, n_mala_steps=10, seed=0)
    target = centred_harmonic()
    trainer = DiKLTrainer(target, generator, score, settings)
    assert target.translation_invariant and trainer.centre is True
    assert trainer.config.schedule.centre is True  # resolved in the run's settings
    trainer.train(200, progress=False)
    with torch.no_grad():
        x = generator.sample(20000, torch.Generator().manual_seed(1))
    second_moment = float(x.pow(2).sum((1, 2)).mean())  # starts at 0.16
    assert 0.85 < second_moment < 1.15, second_moment


# ---------------------------------------------------------------------- DW-4 trainers
def small_dw4_config(**changes):
    settings = dict(batch_size=32, score_batch_size=32, score_steps_per_iter=2, n_importance=4,
                    n_ais_steps=2, n_mala_steps=3, lr_generator=1e-3, lr_score=1e-3, seed=7,
                    checkpoint_every=2, ema_decay=0.9, lr_decay=0.5, n_iterations=4,
                    score_samples_per_iter=48)
    settings.update(changes)
    return DiKLConfig.from_dict(settings)


def dw4_models(seed=0):
    torch.manual_seed(seed)
    return (EGNNGenerator(4, 2, n_layers=2, hidden=16), EGNNScore(4, 2, n_layers=2, hidden=16))


def test_bridge_and_twin_give_the_same_generator_gradient(dw4):
    grads = {}
    for use_bridge in (False, True):
        generator, score = dw4_models()
        trainer = DiKLTrainer(dw4, generator, score, small_dw4_config(use_bridge=use_bridge))
        assert trainer.centre is True
        assert trainer.energy_and_force.uses_bridge is use_bridge
        loss, stats = trainer.generator_loss()
        loss.backward()
        grads[use_bridge] = torch.cat([p.grad.flatten() for p in generator.parameters()])
        trainer.close()
    twin, bridge = grads[False], grads[True]
    assert twin.abs().max() > 0
    assert torch.allclose(bridge, twin, rtol=1e-6, atol=1e-6 * float(twin.abs().max()))


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(dw4, tmp_path):
    generator, score = dw4_models()
    full = DiKLTrainer(dw4, generator, score, small_dw4_config())
    full.train(4, out_dir=tmp_path / "full", progress=False)
    reference = full.state_dict()

    calls = []

    def crash_at_three(target, samples):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupt
        return {"mean_energy": float(target.reduced_energy(samples).mean())}

    generator, score = dw4_models()
    first = DiKLTrainer(dw4, generator, score, small_dw4_config(eval_every=1),
                        eval_fn=crash_at_three)
    with pytest.raises(Interrupt):
        first.train(4, out_dir=tmp_path / "run", progress=False)  # dies in iteration 3
    with open(tmp_path / "run" / "log.csv") as handle:
        assert [r["iteration"] for r in csv.DictReader(handle)] == ["1", "2", "3"]

    generator, score = dw4_models(seed=123)  # different init: everything comes from the file
    resumed = DiKLTrainer(dw4, generator, score, small_dw4_config())
    resumed.train(4, out_dir=tmp_path / "run", resume=True, progress=False)
    state = resumed.state_dict()
    assert state["iteration"] == 4
    for key in ("generator_state", "generator_ema_state", "score_state"):
        for name, value in reference[key].items():
            assert torch.equal(state[key][name], value), (key, name)
    assert torch.equal(state["step_sizes"], reference["step_sizes"])
    assert torch.equal(state["rng_state"], reference["rng_state"])
    with open(tmp_path / "run" / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["iteration"] for r in rows] == ["1", "2", "3", "4"]
    with open(tmp_path / "full" / "log.csv") as handle:
        full_rows = list(csv.DictReader(handle))
    assert [r["score_gap"] for r in rows] == [r["score_gap"] for r in full_rows]
    with open(tmp_path / "run" / "eval.csv") as handle:
        assert [r["iteration"] for r in csv.DictReader(handle)] == ["1", "2"]

    sampler = load_sampler(tmp_path / "run" / "sampler.pt", target="dw4")
    x = sampler.sample(5, seed=3)
    assert x.shape == (5, 4, 2) and x.dtype == F64
    assert torch.equal(x, sampler.sample(5, seed=3))
    assert sampler.to_mdtraj(3, seed=0).n_frames == 3
    # the shipped sampler and a sampler read from the checkpoint are the weight average
    for loaded in (sampler, load_sampler(tmp_path / "run" / "checkpoint.pt")):
        for name, value in loaded.generator.state_dict().items():
            assert torch.equal(value, state["generator_ema_state"][name]), name


def test_checkpoint_errors(dw4, tmp_path):
    generator, score = dw4_models()
    trainer = DiKLTrainer(dw4, generator, score, small_dw4_config())
    path = tmp_path / "checkpoint.pt"
    trainer.save_checkpoint(path)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt.*truncated or corrupt"):
        trainer.load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt.*truncated or corrupt"):
        load_sampler(garbage)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        trainer.load_checkpoint(tmp_path / "missing.pt")

    other = systems.get("mw32")
    mw_trainer = DiKLTrainer(other, MLPGenerator(16, 2, hidden=8, n_layers=1),
                             MLPScore(16, 2, hidden=8, n_layers=1), small_dw4_config())
    with pytest.raises(CheckpointError, match="is for system 'dw4'.*not for 'mw32'"):
        mw_trainer.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="is for system 'dw4', not 'mw32'"):
        load_sampler(path, target=other)
    changed = DiKLTrainer(dw4, *dw4_models(), small_dw4_config(lr_generator=5e-4))
    with pytest.raises(CheckpointError, match=r"different settings: optimisation\.lr_generator="
                                              r"0\.001 \(now 0\.0005\)"):
        changed.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        trainer.train(3, out_dir=tmp_path / "empty", resume=True, progress=False)


def test_check_checkpoint_names_the_file(dw4, tmp_path):
    trainer = DiKLTrainer(dw4, *dw4_models(), small_dw4_config())
    trainer.train(1, out_dir=tmp_path, progress=False)
    assert check_checkpoint(tmp_path / "checkpoint.pt") is None
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        check_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"sampler\.pt.*holds a 'sampler'"):
        check_checkpoint(tmp_path / "sampler.pt")
    check_checkpoint(tmp_path / "sampler.pt", kinds=("sampler",))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt.*truncated or corrupt"):
        check_checkpoint(tmp_path / "garbage.pt")


def test_format_1_checkpoint_with_flat_settings_is_migrated(dw4, tmp_path):
    """A trainer checkpoint written before the settings had sections (flat, centre None,
    without the later coordinate_scale / score_clip) still resumes and loads."""
    trainer = DiKLTrainer(dw4, *dw4_models(), small_dw4_config())
    trainer.train(2, progress=False)
    state = trainer.state_dict()
    assert state["format"] == "openmm_dikl.dikl/2"
    assert state["config"]["schedule"]["centre"] is True  # the resolved centring is stored
    flat = {key: value for section in ("schedule", "posterior", "optimisation", "run")
            for key, value in state["config"][section].items()}
    flat.update(seed=state["config"]["seed"], centre=None,
                acceptance_range=list(flat["acceptance_range"]))
    del flat["coordinate_scale"], flat["score_clip"]
    old = dict(state, format="openmm_dikl.dikl/1", config=flat)
    torch.save(old, tmp_path / "old.pt")

    check_checkpoint(tmp_path / "old.pt")
    resumed = DiKLTrainer(dw4, *dw4_models(seed=3), small_dw4_config())
    resumed.load_checkpoint(tmp_path / "old.pt")
    assert resumed.iteration == 2 and torch.equal(resumed.step_sizes, trainer.step_sizes)
    for name, value in trainer.generator.state_dict().items():
        assert torch.equal(resumed.generator.state_dict()[name], value), name
    assert torch.equal(resumed.rng.get_state(), trainer.rng.get_state())
    assert resumed.step()["score_gap"] == trainer.step()["score_gap"]  # the same next step
    sampler = load_sampler(tmp_path / "old.pt", target="dw4")
    assert sampler.sample(3, seed=0).shape == (3, 4, 2)
    # the migrated settings are compared like new ones
    with pytest.raises(CheckpointError, match=r"different settings: posterior\.n_mala_steps"):
        DiKLTrainer(dw4, *dw4_models(), small_dw4_config(n_mala_steps=9)).load_checkpoint(
            tmp_path / "old.pt")
    torch.save(dict(old, config=dict(flat, no_such_setting=1)), tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"foreign\.pt.*cannot read.*no_such_setting"):
        check_checkpoint(tmp_path / "foreign.pt")


def test_resume_and_fine_tune_rules_follow_the_sections(dw4, tmp_path):
    """Resuming allows other ``run`` settings only; fine-tuning needs the same ``schedule``."""
    base = small_dw4_config()
    run_changes = dict(n_iterations=9, checkpoint_every=3, eval_every=1, eval_samples=10,
                       use_bridge=True)
    other_changes = dict(n_mala_steps=9, mala_init_step=0.5, acceptance_range=(0.2, 0.3),
                         batch_size=16, lr_score=0.5, ema_decay=0.5, score_clip=1.0, seed=99)
    schedule_changes = dict(n_levels=7, beta_max=0.2, parameterization="score",
                            coordinate_scale=2.0, centre=False)
    for key, value in run_changes.items():
        changed = base.replace(**{key: value})
        assert changed.resume_differences(base) == [] and changed != base, key
        assert changed.fine_tune_differences(base) == []
    for key, value in other_changes.items():
        changed = base.replace(**{key: value})
        assert len(changed.resume_differences(base)) == 1, key
        assert changed.fine_tune_differences(base) == [], key
    for key, value in schedule_changes.items():
        changed = base.replace(**{key: value})
        assert [d.split("=")[0] for d in changed.fine_tune_differences(base)] == [
            f"schedule.{key}"]
        assert changed.resume_differences(base) == changed.fine_tune_differences(base)

    trainer = DiKLTrainer(dw4, *dw4_models(), base)
    trainer.train(2, out_dir=tmp_path / "run", progress=False)
    source = tmp_path / "run" / "checkpoint.pt"
    resumed = DiKLTrainer(dw4, *dw4_models(), small_dw4_config(checkpoint_every=1,
                                                               n_iterations=3))
    assert resumed.train(out_dir=tmp_path / "run", resume=True, progress=False)[-1][
        "iteration"] == 3
    uncentred = DiKLTrainer(dw4, *dw4_models(), small_dw4_config(centre=False))
    with pytest.raises(CheckpointError, match=r"schedule\.centre=True \(now False\)"):
        uncentred.load_weights(source)


def test_config_reads_flat_nested_and_mixed_layouts():
    flat = {"n_levels": 20, "batch_size": 256, "n_mala_steps": 5, "n_iterations": 10,
            "seed": 3}
    settings = DiKLConfig.from_dict(flat)
    assert (settings.schedule.n_levels, settings.optimisation.batch_size,
            settings.posterior.n_mala_steps, settings.run.n_iterations, settings.seed) == (
        20, 256, 5, 10, 3)
    assert settings.schedule.beta_max == ScheduleConfig().beta_max  # defaults fill the rest
    nested = settings.to_dict()
    assert set(nested) == {"schedule", "posterior", "optimisation", "run", "seed"}
    assert DiKLConfig.from_dict(nested) == settings
    assert DiKLConfig.from_dict(json.loads(json.dumps(nested))) == settings  # lists in JSON
    mixed = {"schedule": {"n_levels": 20}, "posterior": {"n_mala_steps": 5},
             "batch_size": 256, "n_iterations": 10, "seed": 3}
    assert DiKLConfig.from_dict(mixed) == settings
    assert DiKLConfig(schedule=ScheduleConfig(n_levels=20), posterior={"n_mala_steps": 5},
                      optimisation={"batch_size": 256}, run={"n_iterations": 10},
                      seed=3) == settings
    assert settings.replace(n_levels=7).schedule.n_levels == 7
    assert settings.schedule.n_levels == 20  # frozen: replace makes a copy
    with pytest.raises(AttributeError):
        settings.seed = 4
    for bad, message in ((dict(flat, no_such=1), "unknown DiKLConfig setting 'no_such'"),
                         (dict(flat, schedule={"n_levels": 5}), r"schedule\.n_levels is given "
                                                               "twice"),
                         ({"schedule": {"batch_size": 5}}, r"schedule\.batch_size \(it "
                                                           r"belongs to optimisation\)")):
        with pytest.raises(ValueError, match=message):
            DiKLConfig.from_dict(bad)
    with pytest.raises(TypeError, match="schedule must be a ScheduleConfig or a dict"):
        DiKLConfig(schedule=5)


def test_csv_log_keeps_the_rows_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "log.csv"
    log = CSVLog(path, ["iteration", "loss"])
    for i in range(1, 6):
        log.append({"iteration": i, "loss": 0.5 * i, "not_a_column": 1})
    with open(path, "a") as handle:
        handle.write("1")  # a row cut by a kill inside its first field ("1" of "16")
    log.truncate(3)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["iteration"], r["loss"]) for r in rows] == [("1", "0.5"), ("2", "1.0"),
                                                           ("3", "1.5")]
    CSVLog(path).append({"iteration": 4, "loss": 2.0})  # the header of the existing file
    with open(path, newline="") as handle:
        assert list(csv.DictReader(handle))[-1] == {"iteration": "4", "loss": "2.0"}
    log.truncate(0)
    assert not path.exists()


def test_init_from_a_sampler_checkpoint_loads_the_generator_and_warms_up_the_score(
        dw4, tmp_path, caplog):
    """A sampler.pt (or a shipped checkpoint) holds a generator alone: it is loaded into
    the generator and its average, the score network stays fresh, and the first
    iteration adds score_warmup_steps DSM steps before its generator step."""
    parent = DiKLTrainer(dw4, *dw4_models(), small_dw4_config())
    parent.train(2, out_dir=tmp_path / "parent", progress=False)
    source = tmp_path / "parent" / "sampler.pt"
    shipped = torch.load(source, weights_only=True)["generator_state"]

    child = DiKLTrainer(dw4, *dw4_models(seed=5), small_dw4_config(score_warmup_steps=7))
    fresh_score = copy.deepcopy(child.score_model.state_dict())
    child.load_weights(source)
    assert child.init_from == str(source)
    for module in (child.generator, child.generator_ema):
        for name, value in shipped.items():
            assert torch.equal(module.state_dict()[name], value), name
    for name, value in fresh_score.items():
        assert torch.equal(child.score_model.state_dict()[name], value), name

    def score_optimiser_steps():
        return {int(v["step"]) for v in child.opt_score.state.values()}
    child.step()
    assert score_optimiser_steps() == {2 + 7}  # score_steps_per_iter + warm-up
    child.step()
    assert score_optimiser_steps() == {2 + 7 + 2}  # the warm-up runs once

    with caplog.at_level("WARNING", logger="openmm_dikl.dikl.trainer"):
        DiKLTrainer(dw4, *dw4_models(), small_dw4_config()).load_weights(source)
    assert "holds no score network" in caplog.text
    other_arch = DiKLTrainer(dw4, EGNNGenerator(4, 2, n_layers=2, hidden=8),
                             EGNNScore(4, 2, n_layers=2, hidden=16), small_dw4_config())
    before = copy.deepcopy(other_arch.generator.state_dict())
    with pytest.raises(CheckpointError, match="holds a generator built with"):
        other_arch.load_weights(source)
    for name, value in before.items():
        assert torch.equal(other_arch.generator.state_dict()[name], value), name
    with pytest.raises(ValueError, match="score_warmup_steps must be an integer >= 0"):
        small_dw4_config(score_warmup_steps=-1)


def test_counters_are_read_only_properties(dw4):
    trainer = DiKLTrainer(dw4, *dw4_models(), small_dw4_config())
    row = trainer.step()
    assert trainer.iteration == row["iteration"] == 1 and trainer.skipped_steps == 0
    assert trainer.posterior.n_evaluations == row["energy_evaluations"] > 0
    for obj, name in ((trainer, "iteration"), (trainer, "wall_time"),
                      (trainer, "skipped_steps"), (trainer.posterior, "n_evaluations")):
        with pytest.raises(AttributeError):
            setattr(obj, name, 0)


def test_init_from_starts_a_new_run_from_another_runs_networks(dw4, tmp_path):
    parent = DiKLTrainer(dw4, *dw4_models(), small_dw4_config())
    parent.train(2, out_dir=tmp_path / "parent", progress=False)
    source = tmp_path / "parent" / "checkpoint.pt"
    networks = {key: parent.state_dict()[key] for key in
                ("generator_state", "generator_ema_state", "score_state")}

    # other settings, other initial weights: the networks come from the file, the rest is new
    child = DiKLTrainer(dw4, *dw4_models(seed=5), small_dw4_config(n_mala_steps=5, lr_generator=5e-4))
    fresh_steps = child.step_sizes.clone()
    child.load_weights(source)
    state = child.state_dict()
    for key, values in networks.items():
        for name, value in values.items():
            assert torch.equal(state[key][name], value), (key, name)
    assert state["iteration"] == 0 and not state["opt_generator_state"]["state"]
    assert torch.equal(state["step_sizes"], fresh_steps)

    child = DiKLTrainer(dw4, *dw4_models(seed=5), small_dw4_config(n_mala_steps=5))
    child.train(1, out_dir=tmp_path / "child", init_from=source, progress=False)
    state = child.state_dict()
    assert state["iteration"] == 1
    assert {int(v["step"]) for v in state["opt_generator_state"]["state"].values()} == {1}
    assert child.init_from == state["init_from"] == str(source)
    moved = max(float((state["generator_state"][k] - v).abs().max())
                for k, v in networks["generator_state"].items())
    assert 0 < moved < 0.1  # one small step away from the parent, not from a random start
    # resuming the child ignores init_from: its own checkpoint holds the networks
    resumed = DiKLTrainer(dw4, *dw4_models(seed=9), small_dw4_config(n_mala_steps=5))
    resumed.train(1, out_dir=tmp_path / "child", resume=True, init_from=tmp_path / "nothing.pt",
                  progress=False)
    assert resumed.iteration == 1 and resumed.init_from == str(source)  # kept by the checkpoint
    for name, value in state["generator_state"].items():
        assert torch.equal(resumed.state_dict()["generator_state"][name], value), name

    # a run that kept no weight average: the new run's average starts at the generator
    plain = DiKLTrainer(dw4, *dw4_models(seed=2), small_dw4_config(ema_decay=None))
    plain.save_checkpoint(tmp_path / "plain.pt")
    child.load_weights(tmp_path / "plain.pt")
    for name, value in plain.generator.state_dict().items():
        assert torch.equal(child.generator_ema.state_dict()[name], value), name

    # errors name the problem and write nothing
    other_arch = DiKLTrainer(dw4, EGNNGenerator(4, 2, n_layers=2, hidden=8),
                             EGNNScore(4, 2, n_layers=2, hidden=16), small_dw4_config())
    with pytest.raises(CheckpointError, match="holds a generator built with"):
        other_arch.train(1, out_dir=tmp_path / "bad", init_from=source, progress=False)
    other_noise = DiKLTrainer(dw4, *dw4_models(), small_dw4_config(n_levels=7))
    with pytest.raises(CheckpointError,
                       match=r"score network for other settings: schedule\.n_levels=30 \(now 7\)"):
        other_noise.load_weights(source)
    broken = torch.load(source, weights_only=False)  # a score network that does not fit
    broken["score_state"] = dict(list(broken["score_state"].items())[:-1])
    torch.save(broken, tmp_path / "broken.pt")
    before = copy.deepcopy(child.generator.state_dict())
    with pytest.raises(CheckpointError, match="score network in checkpoint file"):
        child.load_weights(tmp_path / "broken.pt")
    for name, value in before.items():  # all or nothing: the generator was not replaced
        assert torch.equal(child.generator.state_dict()[name], value), name
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        child.train(1, out_dir=tmp_path / "bad", init_from=tmp_path / "missing.pt", progress=False)
    assert not (tmp_path / "bad").exists()


def test_load_sampler_bundled_missing_and_round_trip(tmp_path, monkeypatch):
    import openmm_dikl.systems

    def not_shipped(filename):
        raise FileNotFoundError(filename)

    # an installation without the shipped checkpoint gives a clear error
    monkeypatch.setattr(openmm_dikl.systems, "shipped_path", not_shipped)
    with pytest.raises(FileNotFoundError, match="systems/checkpoints/lj13.pt is missing"):
        load_sampler("lj13")
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="neither a bundled sampler"):
        load_sampler("lj99")
    generator = MLPGenerator(1, 2, hidden=8, n_layers=1)
    path = tmp_path / "mog.pt"
    save_sampler(path, "mog40", generator, {"note": "untrained"})
    sampler = load_sampler(path)
    assert sampler.target_name == "mog40" and sampler.metadata == {"note": "untrained"}
    with torch.no_grad():
        direct = generator.sample(4, torch.Generator().manual_seed(9)).to(F64)
    assert torch.equal(sampler.sample(4, seed=9), direct)
    with pytest.raises(ValueError, match="config"):
        save_sampler(path, "mog40", ShiftedGenerator())


# ---------------------------------------------------------------------- trainer options
class Quadratic:
    """u = |x|² / 2 for 2 particles in 1-D (not translation invariant), torch only."""

    name = "quadratic"
    n_particles = 2
    spatial_dim = 1
    translation_invariant = False

    def reduced_energy(self, x):
        return 0.5 * torch.as_tensor(x, dtype=F64).pow(2).sum((-2, -1))


class CountingGenerator(MLPGenerator):
    """An MLP generator that counts its calls and can emit one overflowing sample."""

    def __init__(self):
        super().__init__(2, 1, hidden=8, n_layers=1)
        self.calls = 0
        self.blow_up = False

    def forward(self, z):
        self.calls += 1
        x = super().forward(z)
        if self.blow_up:  # the first sample has overflowed
            x = torch.cat([x[:1] * 0 + math.inf, x[1:]])
        return x


def small_quadratic_trainer(**changes):
    torch.manual_seed(0)
    settings = dict(n_levels=4, beta_min=1e-3, beta_max=0.2, batch_size=16,
                    score_steps_per_iter=3, n_importance=2, n_ais_steps=0, n_mala_steps=1,
                    seed=0)
    settings.update(changes)
    return trainer_for(Quadratic(), CountingGenerator(), MLPScore(2, 1, hidden=8, n_layers=1),
                       DiKLConfig.from_dict(settings))


def test_score_samples_per_iter_draws_one_pool():
    fresh = small_quadratic_trainer()
    fresh.step()
    assert fresh.generator.calls == 3 + 1  # every DSM step draws, then the generator step
    pooled = small_quadratic_trainer(score_samples_per_iter=40)
    pooled.step()
    assert pooled.generator.calls == 1 + 1
    assert all(math.isfinite(pooled.score_step(torch.zeros(5, 2, 1))) for _ in range(2))


def test_generator_weighting_changes_only_the_generator_gradient():
    grads = {}
    for weighting in ("uniform", "inv_alpha"):
        trainer = small_quadratic_trainer(generator_weighting=weighting)
        loss, _ = trainer.generator_loss()
        loss.backward()
        grads[weighting] = torch.cat([p.grad.flatten() for p in trainer.generator.parameters()])
    # inv_alpha weights every sample by 1/α > 1 (same random draws): a different gradient
    assert not torch.allclose(grads["uniform"], grads["inv_alpha"])
    assert config(generator_weighting=None).optimisation.generator_weighting is None
    with pytest.raises(ValueError, match="optimisation.generator_weighting"):
        config(generator_weighting="snr")


def test_overflowing_samples_are_dropped_and_bad_steps_skipped():
    trainer = small_quadratic_trainer(score_steps_per_iter=0)
    trainer.generator.blow_up = True
    row = trainer.step()
    assert row["n_dropped"] == 1 and math.isfinite(row["score_gap"])
    assert all(torch.isfinite(p).all() for p in trainer.generator.parameters())
    # a NaN gradient (here: a NaN loss) leaves the parameters untouched
    before = [p.detach().clone() for p in trainer.score_model.parameters()]
    trainer.generator.blow_up = False
    trainer.score_model.net[0].weight.register_hook(lambda g: g * math.nan)
    trainer.score_step()
    assert trainer.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.score_model.parameters()))


def test_learning_rate_decay_and_weight_average():
    trainer = small_quadratic_trainer(lr_decay=0.1, n_iterations=10, ema_decay=0.5,
                                      lr_generator=1e-2)
    assert trainer.learning_rate_factor(0) == pytest.approx(1.0)
    assert trainer.learning_rate_factor(5) == pytest.approx(0.55)
    assert trainer.learning_rate_factor(10) == trainer.learning_rate_factor(30) == pytest.approx(0.1)
    assert trainer.sampling_generator is trainer.generator_ema
    start = [p.detach().clone() for p in trainer.generator.parameters()]
    trainer.step()
    assert trainer.opt_generator.param_groups[0]["lr"] == pytest.approx(1e-2)
    after_one = [p.detach().clone() for p in trainer.generator.parameters()]
    trainer.step()
    assert trainer.opt_generator.param_groups[0]["lr"] == pytest.approx(
        1e-2 * trainer.learning_rate_factor(1))
    # ema = ½ (½ θ0 + ½ θ1) + ½ θ2
    for avg, p0, p1, p2 in zip(trainer.generator_ema.parameters(), start, after_one,
                               trainer.generator.parameters()):
        assert torch.allclose(avg, 0.25 * p0 + 0.25 * p1 + 0.5 * p2.detach())
    assert not torch.equal(next(trainer.generator_ema.parameters()),
                           next(trainer.generator.parameters()))
    assert trainer_for(Quadratic(), MLPGenerator(2, 1), MLPScore(2, 1),
                       DiKLConfig()).sampling_generator.__class__ is MLPGenerator
    for bad in (dict(lr_decay=0.0), dict(lr_decay=1.5), dict(ema_decay=1.0),
                dict(score_samples_per_iter=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DiKLConfig.from_dict(bad)


def test_config_validation():
    with pytest.raises(ValueError, match=r"optimisation\.batch_size must be an integer >= 1"):
        config(batch_size=0)
    with pytest.raises(ValueError, match=r"schedule\.beta_min"):
        config(beta_min=0.1, beta_max=0.05)
    with pytest.raises(ValueError, match=r"optimisation\.weighting"):
        config(weighting="snr")
    with pytest.raises(ValueError, match=r"posterior\.acceptance_range"):
        config(acceptance_range=(0.7, 0.5))
    with pytest.raises(ValueError, match=r"posterior\.step_adapt_factor"):
        config(step_adapt_factor=1.0)
    with pytest.raises(ValueError, match=r"run\.use_bridge"):
        config(use_bridge="yes")
    with pytest.raises(ValueError, match="seed"):
        config(seed=1.5)
    with pytest.raises(ValueError, match="has 4 in 2-D"):
        DiKLTrainer(systems.get("dw4"), MLPGenerator(1, 2), MLPScore(4, 2), DiKLConfig())


# ---------------------------------------------------------------------- shipped recipes
def shipped_recipes():
    folder = os.path.join(SHIPPED, "configs")
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.endswith(".json"))


def shipped_checkpoint(name):
    """Path of the shipped checkpoint of ``name``; fails the test if it is missing."""
    path = os.path.normpath(os.path.join(SHIPPED, "checkpoints", f"{name}.pt"))
    assert os.path.isfile(path), f"the shipped checkpoint {path} of {name!r} is missing"
    return path


def test_shipped_recipes_exist():
    assert {json.load(open(path))["system"] for path in shipped_recipes()} >= set(BUNDLED_SAMPLERS)


@pytest.mark.parametrize("path", shipped_recipes())
def test_shipped_recipes_build(path):
    """Every recipe names a bundled system and builds matching networks and a config."""
    with open(path) as handle:
        recipe = json.load(handle)
    assert set(recipe) == {"system", "generator", "score_model", "dikl", "notes"}
    stem = os.path.basename(path)[:-5]  # SYSTEM.json, or SYSTEM_STAGE.json (e.g. fine-tuning)
    assert stem == recipe["system"] or stem.startswith(recipe["system"] + "_"), stem
    target = systems.get(recipe["system"])
    settings = DiKLConfig.from_dict(recipe["dikl"])
    generator, score = build_model(recipe["generator"]), build_model(recipe["score_model"])
    space = diffusion_space(target, settings.schedule, False)
    assert (generator.n_particles, generator.spatial_dim) == (target.n_particles,
                                                              target.spatial_dim)
    assert (score.n_particles, score.spatial_dim) == space.shape
    assert settings.run.n_iterations > 0 and recipe["notes"]


@pytest.mark.parametrize("name", BUNDLED_SAMPLERS)
def test_shipped_checkpoints_load_and_sample(name):
    """A shipped sampler loads by name, samples finite configurations and has its record."""
    path = shipped_checkpoint(name)
    sampler = load_sampler(name, target=name)
    # the installed copy (a regular install) or the file itself (an editable one)
    assert filecmp.cmp(sampler.source, path, shallow=False)
    target = systems.get(name)
    x = sampler.sample(64, seed=0)
    assert x.shape == (64, target.n_particles, target.spatial_dim) and torch.isfinite(x).all()
    with open(path[:-3] + ".json") as handle:
        record = json.load(handle)
    assert record["wall_time_s"] > 0 and "command" in record and "metrics" in record


#: What each shipped checkpoint is stated to achieve (README, closing notes), re-measured
#: here on 4,000 fresh samples: (metric, bound, "max" for an upper / "min" for a lower bound).
#: The bounds leave room for the sampling noise of 4,000 samples, not for a worse model.
#: (metric, bound, "max"/"min", must also beat the untrained network) per shipped sampler.
#: MoG-40's residual generator starts as N(0, 20²) over the whole box, so untrained it
#: "visits" every mode: there coverage has only its bound, the density must improve.
SHIPPED_QUALITY = {
    # measured on these 4,000 samples: energy TVD 0.289, distance TVD 0.099, W2 1.853
    # (seeds 7 / 11: 0.285 / 0.099 / 1.894, 0.281 / 0.100 / 1.872); the 5,000-iteration
    # generator before it (0.332 / 0.136 / 1.877 on 10,000) fails the first two bounds
    "dw4": [("energy_tvd", 0.32, "max", True), ("distance_tvd", 0.12, "max", True),
            ("w2", 1.95, "max", True)],
    "lj13": [("energy_tvd", 0.92, "max", True), ("distance_tvd", 0.19, "max", True),
             ("w2", 4.7, "max", True)],
    # measured on these 4,000 samples: 37 of 40 modes, mode-weight TVD 0.337, mean log
    # density -10.09 (the checkpoint before it: 30 / 0.385 / -8.95, which the first two
    # bounds reject; its density was higher, so that bound only guards against collapse
    # and against the untrained -31.3; untrained, the N(0, 20²) start has TVD 0.337 too)
    "mog40": [("mode_coverage", 0.85, "min", False), ("mode_weight_error", 0.36, "max", False),
              ("mean_log_density", -10.6, "min", True)],
    # measured on these 4,000 samples: KL Ramachandran 0.161, KL φ 0.176, energy TVD 0.106
    # (seeds 7 and 11: 0.164 / 0.189 / 0.093, 0.162 / 0.178 / 0.100); the 2,000-iteration
    # generator before the fine-tuning: 0.171 / 0.212 / 0.099, which the φ bound rejects
    "alanine_dipeptide_implicit": [("kl_ramachandran", 0.185, "max", True),
                                   ("kl_phi", 0.205, "max", True),
                                   ("energy_tvd", 0.13, "max", True)],
    # 0.156 is the error of a coordinate collapsed into the heavy well; all 16 collapsed
    # give a mean of 0.156 too, so the mean bound needs some coordinates that mix
    "mw32": [("max_basin_weight_error", 0.18, "max", True),
             ("mean_basin_weight_error", 0.152, "max", True)],
}


def test_every_bundled_sampler_has_stated_quality():
    assert set(SHIPPED_QUALITY) == set(BUNDLED_SAMPLERS)


@pytest.mark.parametrize("name", BUNDLED_SAMPLERS)
def test_shipped_checkpoints_meet_their_stated_quality(name):
    """Re-measure each shipped generator; it meets its bounds and beats its untrained self."""
    shipped_checkpoint(name)
    target = systems.get(name)
    sampler = load_sampler(name, target=name)
    trained = evaluation_metrics(target, sampler.sample(4000, seed=123), floors=False)
    torch.manual_seed(0)
    untrained_net = build_model(sampler.generator.config)
    with torch.no_grad():
        untrained = evaluation_metrics(target, untrained_net.sample(4000).double(),
                                       floors=False)
    for metric, bound, kind, beat_untrained in SHIPPED_QUALITY[name]:
        value, before = trained[metric], untrained[metric]
        if kind == "max":
            assert value <= bound, (name, metric, value)
            assert not beat_untrained or value < before, (name, metric, value, before)
        else:
            assert value >= bound, (name, metric, value)
            assert not beat_untrained or value > before, (name, metric, value, before)
