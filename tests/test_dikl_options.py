"""Options that follow the DiKL reference code, all off by default: generator weighting
1/α, min_level, fresh score samples, MLPScore(time_every_layer), the EGNN generator's
displacement output / norm_constant / attention, posterior iterate averaging and
checkpoint selection without validation data."""
import copy
import math
import os
import shutil

import numpy as np

import pytest
import torch
from torch import nn

import openmm_dikl.dikl.trainer as trainer_module
from openmm_dikl import systems
from openmm_dikl.analysis.metrics import energy_tvd
from openmm_dikl.dikl import DiKLTrainer, PosteriorSampler, load_sampler
from openmm_dikl.dikl.diffusion import (VPSchedule, dikl_surrogate_loss, level_weights,
                                        mixed_score_identity)
from openmm_dikl.dikl.selection import selection_score
from openmm_dikl.geometry import remove_mean
from openmm_dikl.dikl.checkpoints import read_checkpoint
from openmm_dikl.nn import (EGNNGenerator, EGNNLayer, EGNNScore, MLPGenerator, MLPScore,
                            build_model)
from openmm_dikl.nn.base import mlp, sinusoidal_embedding
from openmm_dikl.samplers import refine_samples

from test_dikl import (SHIPPED, TwoModes, config, dw4_models, small_dw4_config,
                       small_quadratic_trainer, trainer_for)
from test_models import close, data, orthogonal, randomised

F64 = torch.float64


@pytest.fixture(scope="module")
def dw4():
    return systems.get("dw4")


# ---------------------------------------------------------------------- 1. weighting 1/α
def test_inv_alpha_generator_weighting_counts_every_level_equally(monkeypatch):
    """w = 1/α cancels the α of ∂x_t/∂θ: the gradient of a shift is the plain mean score
    difference, whatever the levels (with w = 1 noisy levels count α times less)."""
    schedule = VPSchedule(10, 1e-3, 0.3)
    t_index = torch.arange(10).repeat(3)
    assert torch.equal(level_weights(schedule, t_index, "inv_alpha"),
                       1.0 / schedule.alpha(t_index))
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(30, 2, 2, generator=gen, dtype=F64)
    eps = torch.randn(30, 2, 2, generator=gen, dtype=F64)
    diff = torch.randn(30, 2, 2, generator=gen, dtype=F64)  # s_model − s_target
    alpha = schedule.alpha(t_index)[:, None, None]
    sigma = schedule.sigma(t_index)[:, None, None]
    grads = {}
    for weighting in ("inv_alpha", "uniform"):
        shift = torch.zeros(2, dtype=F64, requires_grad=True)
        x_t = alpha * (z + shift) + sigma * eps
        w = level_weights(schedule, t_index, weighting)
        dikl_surrogate_loss(x_t, diff, torch.zeros_like(diff), w).backward()
        grads[weighting] = shift.grad
    assert torch.allclose(grads["inv_alpha"], diff.sum((0, 1)) / 30, rtol=1e-12)
    assert torch.allclose(grads["uniform"], (alpha * diff).sum((0, 1)) / 30, rtol=1e-12)

    # the trainer hands 1/α_t of the drawn levels to the generator loss only
    seen = []

    def recording(schedule, t_index, weighting="sigma2"):
        weights = level_weights(schedule, t_index, weighting)
        seen.append((weighting, t_index, weights))
        return weights

    monkeypatch.setattr(trainer_module, "level_weights", recording)
    trainer = small_quadratic_trainer(generator_weighting="inv_alpha")
    trainer.step()
    ((weighting, levels, weights),) = seen  # one generator step; the DSM loss is not routed here
    assert weighting == "inv_alpha" and trainer.config.optimisation.weighting == "sigma2"
    assert torch.equal(weights, 1.0 / trainer.schedule.alpha(levels))


# ---------------------------------------------------------------------- 2. min_level
def test_min_level_skips_the_least_noisy_level():
    schedule = VPSchedule(4, 1e-3, 0.2)
    same = schedule.sample_levels(500, torch.Generator().manual_seed(3), low=0)
    assert torch.equal(same, schedule.sample_levels(500, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="low"):
        schedule.sample_levels(5, low=4)

    drawn = []
    trainer = small_quadratic_trainer(min_level=1)
    original = trainer.schedule.sample_levels

    def recording(n, generator=None, low=0):
        levels = original(n, generator, low)
        drawn.append(levels)
        return levels

    trainer.schedule.sample_levels = recording
    row = trainer.step()
    levels = torch.cat(drawn)
    assert len(drawn) == 3 + 1  # every DSM step and the generator step
    assert set(levels.tolist()) == {1, 2, 3}
    # the log reports the step sizes of the trained levels (level 0 is never adapted)
    assert row["step_size_min"] == float(trainer.step_sizes[1:].min())

    assert config().optimisation.min_level == 0
    for bad in (-1, 1.5, True, 30):
        with pytest.raises(ValueError, match=r"optimisation\.min_level"):
            config(min_level=bad)
    with pytest.raises(ValueError, match=r"optimisation\.min_level must be < "
                                         r"schedule\.n_levels = 4"):
        config(n_levels=4, min_level=4)
    base = config(n_levels=4)
    changed = base.replace(min_level=1)
    assert changed.resume_differences(base) == ["optimisation.min_level=0 (now 1)"]
    assert changed.fine_tune_differences(base) == []  # not a schedule setting


# ---------------------------------------------------------------------- 3. fresh samples
def test_score_steps_draw_fresh_generator_samples_by_default(monkeypatch):
    """score_samples_per_iter=None (the default, the reference code's way): every DSM step
    trains on its own new generator batch; with a pool, every batch comes from one draw."""
    batches = []

    def recording(model, x0, *args, **kwargs):
        batches.append(x0.detach().clone())
        return real(model, x0, *args, **kwargs)

    real = trainer_module.dsm_loss
    monkeypatch.setattr(trainer_module, "dsm_loss", recording)
    fresh = small_quadratic_trainer(score_batch_size=8)
    assert fresh.config.optimisation.score_samples_per_iter is None
    fresh.step()
    assert fresh.generator.calls == 3 + 1 and len(batches) == 3
    rows = torch.cat([b.flatten(1) for b in batches])
    assert len(torch.unique(rows, dim=0)) == 3 * 8  # no sample is used twice

    batches.clear()
    pooled = small_quadratic_trainer(score_batch_size=8, score_samples_per_iter=12)
    pooled.step()
    assert pooled.generator.calls == 1 + 1
    rows = torch.cat([b.flatten(1) for b in batches])
    assert len(torch.unique(rows, dim=0)) <= 12  # three batches of 8 out of one pool


# ---------------------------------------------------------------------- 4. MLPScore
def test_mlp_score_time_every_layer():
    torch.manual_seed(0)
    plain = MLPScore(3, 2, hidden=16, n_layers=3, time_embedding_dim=8)
    torch.manual_seed(0)
    old = mlp([6 + 8 + 1, 16, 16, 16, 6], nn.SiLU)  # the architecture before the option
    x, t = torch.randn(5, 3, 2), torch.rand(5)
    tau = torch.cat([t[:, None], sinusoidal_embedding(t, 8)], -1)
    assert plain.state_dict().keys() == {f"net.{k}" for k in old.state_dict()}
    assert torch.equal(plain(x, t), old(torch.cat([x.reshape(5, -1), tau], -1)).reshape(5, 3, 2))
    assert "time_every_layer" not in plain.config

    every = MLPScore(3, 2, hidden=16, n_layers=3, time_embedding_dim=8, time_every_layer=True)
    assert every(x, t).shape == (5, 3, 2) and every.config["time_every_layer"] is True
    assert every.state_dict().keys() != plain.state_dict().keys()
    assert len(every.time_layers) == 3 and every.layers[0].in_features == 6  # x only in
    copy_ = build_model(every.config)
    copy_.load_state_dict(every.state_dict())
    assert torch.equal(copy_(x, t), every(x, t))
    # time reaches the last hidden layer directly: with the other time inputs zeroed the
    # output still depends on t
    with torch.no_grad():
        for layer in every.time_layers[:-1]:
            layer.weight.zero_()
        every.layers[0].weight.zero_()
        every.layers[0].bias.zero_()
    assert not torch.allclose(every(x, t), every(x, torch.rand(5)))
    centred = MLPScore(3, 2, hidden=8, n_layers=1, centre=True, time_every_layer=True)
    with torch.no_grad():
        assert float(centred(x, t).sum(1).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="time_every_layer"):
        MLPScore(3, 2, time_every_layer="yes")


# ---------------------------------------------------------------------- 5. EGNN options
REFERENCE_EGNN = dict(normalize=True, norm_constant=1.0, tanh=True, coords_range=15 / 3,
                      aggregation="sum", attention=True, activation="ReLU")
GENERATOR_OPTIONS = [dict(output="displacement"), dict(normalize=True, norm_constant=1.0),
                     dict(attention=True), dict(REFERENCE_EGNN, output="displacement")]
SCORE_OPTIONS = [dict(normalize=True, norm_constant=1.0), dict(attention=True), REFERENCE_EGNN]


@pytest.mark.parametrize("d,reflect", [(2, True), (3, False), (3, True)])
@pytest.mark.parametrize("options", GENERATOR_OPTIONS)
def test_generator_options_keep_equivariance(d, reflect, options):
    n = 5
    gen = randomised(EGNNGenerator(n, d, n_layers=3, hidden=16, **options))
    z = data(6, n, d)
    x = gen(z).detach()
    q = orthogonal(d, seed=2, reflect=reflect)
    shift = torch.tensor([1.7, -0.4, 2.5][:d], dtype=F64)
    assert close(gen(z @ q + shift), x @ q)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert close(gen(z[:, perm]), x[:, perm])
    assert float(x.sum(1).abs().max()) < 1e-10  # centred
    assert float((x - remove_mean(z)).abs().max()) > 0.1  # not the identity


@pytest.mark.parametrize("d,reflect", [(2, True), (3, True)])
@pytest.mark.parametrize("options", SCORE_OPTIONS)
def test_score_options_keep_equivariance(d, reflect, options):
    n = 4
    score = randomised(EGNNScore(n, d, n_layers=2, hidden=16, time_embedding_dim=8, **options))
    x = data(5, n, d)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    s = score(x, t).detach()
    q = orthogonal(d, seed=3, reflect=reflect)
    shift = torch.tensor([-2.0, 0.3, 1.1][:d], dtype=F64)
    assert close(score(x @ q + shift, t), s @ q)
    perm = torch.tensor([2, 3, 1, 0])
    assert close(score(x[:, perm], t), s[:, perm])
    assert float(s.abs().max()) > 0.1


def test_displacement_output_is_positions_minus_latent():
    torch.manual_seed(0)
    positions = randomised(EGNNGenerator(4, 3, n_layers=2, hidden=8))
    displacement = EGNNGenerator(4, 3, n_layers=2, hidden=8, output="displacement").double()
    displacement.load_state_dict(positions.state_dict())  # same parameters
    z = data(3, 4, 3, seed=4)
    assert close(displacement(z), positions(z) - remove_mean(z))
    fresh = EGNNGenerator(4, 3, n_layers=2, hidden=8, output="displacement")
    assert float(fresh(torch.randn(3, 4, 3)).detach().abs().max()) < 0.05  # starts near 0
    with pytest.raises(ValueError, match="output"):
        EGNNGenerator(4, 3, output="velocity")


def test_norm_constant_and_attention_change_the_layer_as_documented():
    layer = randomised(EGNNLayer(8, normalize=True, norm_constant=1.0, attention=True))
    plain = randomised(EGNNLayer(8, normalize=True))
    h, x = data(2, 4, 8, seed=7), data(2, 4, 3, seed=8)
    diff = x[:, :, None] - x[:, None]
    sq = diff.pow(2).sum(-1)
    m = layer._edge_update(h, sq)
    # attention: the messages of the plain edge MLP gated by sigmoid(w · m + b) in (0, 1)
    w = layer.edge_in.weight
    pre = (h @ w[:, :8].T + layer.edge_in.bias)[:, :, None] + (h @ w[:, 8:16].T)[:, None] \
        + sq[..., None] * w[:, -1]
    ungated = layer.edge_out(pre)
    gate = layer.attention_mlp(ungated)
    assert close(m, ungated * gate) and bool(((gate > 0) & (gate < 1)).all())
    # norm_constant 1: (x_i − x_j) / (|x_i − x_j| + 1), the reference code's coord2radial
    weight = layer.coord_mlp(m)
    expected = x + (diff / (sq.sqrt()[..., None] + 1.0 + 1e-8) * weight).sum(2) / 3
    assert close(layer._coord_update(x, diff, sq, m), expected)
    assert "attention_mlp" not in dict(plain.named_modules())
    gen = EGNNGenerator(4, 3, n_layers=2, hidden=8, normalize=True, norm_constant=1.0,
                        attention=True)
    assert gen.config["norm_constant"] == 1.0 and gen.config["attention"] is True
    for bad, match in ((dict(norm_constant=1.0), "normalize=True"),
                       (dict(normalize=True, norm_constant=-1.0), "norm_constant"),
                       (dict(normalize=True, norm_constant=math.inf), "norm_constant")):
        with pytest.raises(ValueError, match=match):
            EGNNLayer(8, **bad)


@pytest.mark.parametrize("options", GENERATOR_OPTIONS)
def test_new_egnn_options_round_trip_and_have_finite_gradients(options):
    torch.manual_seed(0)
    gen = randomised(EGNNGenerator(5, 3, n_layers=2, hidden=8, **options))
    copy_ = build_model(gen.config).double()
    copy_.load_state_dict(gen.state_dict())
    z = data(4, 5, 3, seed=12).requires_grad_(True)
    assert torch.equal(copy_(z), gen(z))
    score_options = {k: v for k, v in options.items() if k != "output"}
    score = randomised(EGNNScore(5, 3, n_layers=2, hidden=8, **score_options))
    score(gen(z), torch.full((4,), 0.3, dtype=F64)).pow(2).sum().backward()
    grads = [p.grad for p in list(gen.parameters()) + list(score.parameters())] + [z.grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def test_default_networks_keep_their_configs():
    """Existing configs (and so the shipped checkpoints) gain no keys and build as before."""
    keys = {"class", "n_particles", "spatial_dim", "n_layers", "hidden", "node_features",
            "activation", "aggregation", "normalize", "tanh", "coords_range",
            "coord_hidden_layer"}
    assert set(EGNNGenerator(4, 2).config) == keys | {"latent_std"}
    assert set(EGNNScore(4, 2).config) == keys | {"time_embedding_dim"}
    assert set(MLPScore(1, 2).config) == {"class", "n_particles", "spatial_dim", "hidden",
                                          "n_layers", "time_embedding_dim", "activation",
                                          "centre"}
    for name in ("dw4", "lj13"):
        sampler = load_sampler(name)
        stored = read_checkpoint(sampler.source)["generator_config"]
        assert set(stored) <= keys | {"latent_std"}, stored
        assert sampler.generator.output == "positions"


# ---------------------------------------------------------------------- 6. averaging
class Gaussian1D:
    """u = x² / (2 s²) for one particle in 1-D (torch only)."""

    def __init__(self, std):
        self.std = std

    def __call__(self, x):
        return x.pow(2).sum((-2, -1)) / (2 * self.std**2), -x / self.std**2


def test_posterior_iterate_averaging_lowers_the_variance_at_equal_cost():
    """On a Gaussian target both estimates of the noisy score are unbiased; averaging the
    last 20 of 40 MALA iterates gives a clearly smaller variance for the same evaluations."""
    std, alpha, sigma = 0.5, 0.8, 0.6
    points = torch.tensor([-1.0, 0.0, 0.7], dtype=F64)
    repeats = 3000
    x_t = points.repeat_interleave(repeats)[:, None, None]
    exact = -points / (alpha**2 * std**2 + sigma**2)
    estimates, costs = {}, {}
    for average_last in (0, 20):
        sampler = PosteriorSampler(Gaussian1D(std), n_importance=5, n_ais_steps=0,
                                   n_mala_steps=40, average_last=average_last)
        out = sampler.sample(x_t, alpha, sigma, 0.1, torch.Generator().manual_seed(5),
                             groups=torch.zeros(len(x_t), dtype=torch.long))
        msi = mixed_score_identity(x_t, out.samples, out.forces, alpha, sigma)[:, 0, 0]
        estimates[average_last] = msi.reshape(3, repeats)
        costs[average_last] = sampler.n_evaluations
    assert costs[0] == costs[20] == len(x_t) * (5 + 40)
    for values in estimates.values():
        se = values.std(1) / math.sqrt(repeats)
        assert ((values.mean(1) - exact).abs() < 5 * se).all(), (values.mean(1), exact, se)
    ratio = estimates[20].var(1) / estimates[0].var(1)
    assert (ratio < 0.3).all(), ratio  # about 0.07 for this chain (measured)

    with pytest.raises(ValueError, match="average_last"):
        PosteriorSampler(Gaussian1D(std), n_mala_steps=5, average_last=6)
    assert config().posterior.average_last == 0
    for bad in (-1, 0.5, 51):
        with pytest.raises(ValueError, match=r"posterior\.average_last"):
            config(average_last=bad)
    quad = small_quadratic_trainer(n_mala_steps=4, average_last=2)
    assert quad.posterior.average_last == 2 and math.isfinite(quad.step()["score_gap"])


# ---------------------------------------------------------------------- 7. selection
def selection_config(**changes):
    settings = dict(eval_every=1, select_checkpoint="mala_energy_tvd", eval_samples=64,
                    select_mala_steps=5, checkpoint_every=2)
    settings.update(changes)
    return small_dw4_config(**settings)


def recording_trainer(dw4, settings):
    """A DW-4 trainer whose eval_fn keeps, per iteration, the samples it was handed and the
    weights of the sampling generator (which selection scored)."""
    seen = {}

    def eval_fn(target, samples):
        seen[trainer.iteration] = (samples.clone(),
                                   copy.deepcopy(trainer.sampling_generator.state_dict()))
        return {}

    trainer = DiKLTrainer(dw4, *dw4_models(), settings, eval_fn=eval_fn)
    return trainer, seen


def test_select_checkpoint_keeps_the_best_sampler(dw4, tmp_path):
    trainer, seen = recording_trainer(dw4, selection_config())
    rows = trainer.train(4, out_dir=tmp_path, progress=False)
    scores = [row["selection_score"] for row in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    best = min(range(4), key=lambda i: (scores[i], i))
    assert trainer.selection_best == {"rule": "mala_energy_tvd", "score": scores[best],
                                      "iteration": best + 1}
    assert rows[-1]["selection_best_score"] == scores[best]
    assert rows[-1]["selection_best_iteration"] == best + 1
    # the score is the documented one: TVD of the energies before and after MALA
    samples, weights = seen[best + 1]
    chains = refine_samples(dw4, samples, 5, method="mala", seed=7 * 1_000_003 + best + 1)
    assert scores[best] == energy_tvd(chains.initial_reduced_energies,
                                      chains.final_reduced_energies)
    # best_sampler.pt holds the weight average of that iteration and its record
    saved = load_sampler(tmp_path / "best_sampler.pt", target="dw4")
    assert saved.metadata["selection"] == trainer.selection_best
    assert saved.metadata["iteration"] == best + 1
    for name, value in weights.items():
        assert torch.equal(saved.generator.state_dict()[name], value), name
    with open(tmp_path / "eval.csv") as handle:
        assert "selection_score" in handle.readline()
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave no temporary file


def test_select_mean_energy(dw4):
    trainer, seen = recording_trainer(dw4, selection_config(select_checkpoint="mean_energy"))
    rows = trainer.train(2, progress=False)
    for row in rows:
        u = dw4.reduced_energy(seen[row["iteration"]][0])
        assert (u < 300).any() and not (u < 300).all()  # the cutoff matters here
        assert row["selection_score"] == pytest.approx(float(u[u < 300].mean()), rel=1e-12)
    assert selection_score("mean_energy", dw4, seen[1][0], energy_cutoff=-1e9) == math.inf
    with pytest.raises(ValueError, match="unknown selection rule"):
        selection_score("w2", dw4, seen[1][0])


def test_select_digs_ramachandran_kl_flags_a_missing_basin(dw4):
    """The rule scores samples of the reference (exact: DiGS leaves them in place in
    distribution) lower than the same number of samples with the αR basin removed, which
    the sweeps repopulate; and it is KL(after ‖ before) of the refined samples."""
    from openmm_dikl.analysis.torsion_metrics import ramachandran_kl, torsion_angles
    from openmm_dikl.dikl.selection import RAMACHANDRAN_SELECTION_BINS

    target = systems.get("alanine_dipeptide_implicit")
    positions = np.load(os.path.join(SHIPPED, "ala2_implicit_reference.npz"))["positions"]
    psi = torsion_angles(positions, target.torsions["psi"])[:, 0]
    rng = np.random.default_rng(0)
    exact = positions[rng.choice(len(positions), 300, replace=False)]
    no_alpha = positions[psi > 1.0][rng.choice(int((psi > 1.0).sum()), 300, replace=False)]
    scores = [selection_score("digs_ramachandran_kl", target, x, mala_steps=10, seed=0)
              for x in (exact, no_alpha)]
    # seeds 0-19 of this set-up: ratio 2.0-4.9 (4.9 at seed 0)
    assert scores[1] > 1.5 * scores[0] > 0
    refined = refine_samples(target, no_alpha, 10, method="digs", seed=0).final_positions

    def rama(x):
        return np.stack([torsion_angles(x, target.torsions[k])[:, 0] for k in ("phi", "psi")], -1)

    assert scores[1] == pytest.approx(ramachandran_kl(rama(no_alpha), rama(refined),
                                                      bins=RAMACHANDRAN_SELECTION_BINS))
    with pytest.raises(ValueError, match="backbone"):
        selection_score("digs_ramachandran_kl", dw4, dw4.reference_samples(8), mala_steps=1)


def test_select_checkpoint_resume_is_bit_exact_and_keeps_the_best(dw4, tmp_path):
    full = DiKLTrainer(dw4, *dw4_models(), selection_config())
    full.train(4, out_dir=tmp_path / "full", progress=False)
    reference = full.state_dict()

    first = DiKLTrainer(dw4, *dw4_models(), selection_config())
    first.train(2, out_dir=tmp_path / "run", progress=False)
    shutil.copytree(tmp_path / "run", tmp_path / "rigged")
    resumed = DiKLTrainer(dw4, *dw4_models(seed=4), selection_config())
    resumed.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert resumed.selection_best == first.selection_best  # carried by the checkpoint
    resumed = DiKLTrainer(dw4, *dw4_models(seed=4), selection_config())
    resumed.train(4, out_dir=tmp_path / "run", resume=True, progress=False)
    state = resumed.state_dict()
    for key in ("generator_state", "generator_ema_state", "score_state"):
        for name, value in reference[key].items():
            assert torch.equal(state[key][name], value), (key, name)
    assert torch.equal(state["rng_state"], reference["rng_state"])
    assert state["selection_best"] == reference["selection_best"] == full.selection_best
    best = [load_sampler(tmp_path / run / "best_sampler.pt") for run in ("full", "run")]
    for name, value in best[0].generator.state_dict().items():
        assert torch.equal(best[1].generator.state_dict()[name], value), name

    # a best-so-far no later iteration can beat is kept through the resume
    rigged = torch.load(tmp_path / "rigged" / "checkpoint.pt", weights_only=False)
    rigged["selection_best"] = {"rule": "mala_energy_tvd", "score": -1.0, "iteration": 2}
    torch.save(rigged, tmp_path / "rigged" / "checkpoint.pt")
    before = (tmp_path / "rigged" / "best_sampler.pt").read_bytes()
    again = DiKLTrainer(dw4, *dw4_models(), selection_config())
    rows = again.train(4, out_dir=tmp_path / "rigged", resume=True, progress=False)
    assert [r["selection_best_iteration"] for r in rows] == [2, 2]
    assert (tmp_path / "rigged" / "best_sampler.pt").read_bytes() == before
    # a resumed run may change the rule (a run setting); the old best is then dropped
    other = DiKLTrainer(dw4, *dw4_models(), selection_config(select_checkpoint="mean_energy"))
    other.train(5, out_dir=tmp_path / "rigged", resume=True, progress=False)
    assert other.selection_best["rule"] == "mean_energy"
    assert other.selection_best["iteration"] == 5
    # a fresh run in the folder does not inherit the old best_sampler.pt
    DiKLTrainer(dw4, *dw4_models(), small_dw4_config()).train(
        1, out_dir=tmp_path / "rigged", progress=False)
    assert not (tmp_path / "rigged" / "best_sampler.pt").exists()


def test_recipe_training_records_the_selected_sampler(tmp_path):
    from openmm_dikl.dikl.recipes import train_from_recipe
    tiny = dict(n_particles=4, spatial_dim=2, n_layers=2, hidden=16)
    settings = dict(small_dw4_config(select_checkpoint="mean_energy", eval_every=1,
                                     eval_samples=64, n_iterations=2).to_dict())
    recipe = {"system": "dw4", "generator": dict(tiny, **{"class": "EGNNGenerator"}),
              "score_model": dict(tiny, **{"class": "EGNNScore"}), "dikl": settings}
    result = train_from_recipe("dw4", recipe, tmp_path, progress=False, command=["test"])
    record = load_sampler(tmp_path / "best_sampler.pt").metadata["selection"]
    assert {k: result["selection"][k] for k in ("rule", "score", "iteration")} == record
    assert record["rule"] == "mean_energy" and record["iteration"] in (1, 2)
    assert set(result["selection"]["metrics"]) == set(result["metrics"])


def test_selection_settings_are_validated_and_belong_to_the_run_section(dw4):
    assert config().run.select_checkpoint is None
    base = config(eval_every=5)
    for key, value in (("select_checkpoint", "mean_energy"), ("select_mala_steps", 10),
                       ("select_energy_cutoff", 100.0)):
        changed = base.replace(**{key: value})
        assert changed.resume_differences(base) == [] and changed != base, key
    with pytest.raises(ValueError, match=r"run\.select_checkpoint must be None when "
                                         r"run\.eval_every is 0"):
        config(select_checkpoint="mean_energy")
    with pytest.raises(ValueError, match=r"run\.select_checkpoint must be None or one of"):
        config(select_checkpoint="w2", eval_every=1)
    for key, bad in (("select_mala_steps", 0), ("select_energy_cutoff", math.inf),
                     ("select_energy_cutoff", "300")):
        with pytest.raises(ValueError, match=rf"run\.{key}"):
            config(**{key: bad})
    with pytest.raises(ValueError, match="needs a TargetSystem"):
        trainer_for(TwoModes(), MLPGenerator(1, 1), MLPScore(1, 1),
                    config(select_checkpoint="mala_energy_tvd", eval_every=1))


def test_ablation_benchmark_runs_variants_of_settings_and_architectures(tmp_path, capsys,
                                                                       load_benchmark):
    """benchmarks/dikl_ablation.py: one run per variant (flat DiKL settings or
    ``generator.NAME`` architecture keys), read back on a second call, and a table row each."""
    import json
    module = load_benchmark("dikl_ablation")
    args = ["mw32", "--iterations", "2", "--out", str(tmp_path), "--variant",
            "base=seed:0", "--variant", "narrow=generator.hidden:16,lr_generator:0.002"]
    module.main(args)
    recipe = json.loads((tmp_path / "narrow" / "recipe.json").read_text())
    assert recipe["generator"]["hidden"] == 16 and recipe["dikl"]["lr_generator"] == 0.002
    base = json.loads((tmp_path / "base" / "recipe.json").read_text())
    assert base["generator"]["hidden"] == 256 and base["dikl"]["n_iterations"] == 2
    first = capsys.readouterr().out
    table = [line.split("|")[1:-1] for line in first.splitlines() if line.startswith("| ")]
    header, rows = table[0], table[1:]
    assert "max_basin_weight_error" in [cell.strip() for cell in header]
    assert [row[0].strip() for row in rows] == ["base", "narrow"]
    # every metric cell is a number (the system's metrics were measured for each run)
    assert all(len(row) == len(header) and all(float(c) >= 0 for c in row[3:]) for row in rows)
    module.main(args)                      # finished variants are read back, not retrained
    second = capsys.readouterr().out
    assert [l for l in second.splitlines() if l.startswith("| ")] == \
        [l for l in first.splitlines() if l.startswith("| ")]
    with pytest.raises(ValueError, match="SECTION.NAME"):
        module.variant_recipe(base, {"dikl.seed": 1}, 2)
