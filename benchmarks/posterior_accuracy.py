"""How accurate DiKL's target-score estimate is, noise level by noise level.

For a recipe (its diffusion space, noise schedule and posterior sampler) and a generator
(the weights of a trainer or sampler checkpoint), draws B generator samples per level,
noises them, and compares the recipe's mixed-score-identity estimate ŝ of
∇ log p_t(x_t) with a high-effort estimate s* of the same x_t (16 chains per x_t,
warm-started, 200 MALA steps, each followed by a dihedral jump where the space has
periodic coordinates, the average over the last 100 iterates).  Prints per level
σ_t/α_t, the mean squared residual |ŝ − s*|², |s*|² and their ratio (0: exact, about 1
or more: the estimate carries no information), the median over x_t of the per-x_t ratio
(a mean far above the median means that a few x_t got wild estimates), and the force
evaluations of each.

    python benchmarks/posterior_accuracy.py systems/configs/alanine_dipeptide_implicit.json \
        --weights runs/ala2/checkpoint.pt [--levels 1 5 10 ...] [--batch 32]

Run it on two recipes with the same ``--weights`` to compare samplers at equal x_t
distributions ("before" and "after" a change of space or posterior).  Units: the score is
in the diffusion space's units (1/nm in Cartesian, dimensionless in internal
coordinates), so compare the ratio column across spaces.
"""
import argparse
import json
import time

import torch

from openmm_dikl.dikl import DiKLTrainer, PosteriorSampler
from openmm_dikl.dikl.checkpoints import read_checkpoint
from openmm_dikl.dikl.diffusion import mixed_score_identity, perturb


def load_generator_weights(trainer, path):
    """Put the generator (its weight average, if kept) of a checkpoint into the trainer."""
    obj = read_checkpoint(path)
    state = obj.get("generator_ema_state") or obj["generator_state"]
    trainer.generator.load_state_dict(state)


def estimate(sampler, x_t, alpha, sigma, step, x0, rng, warm):
    """MSI estimate of the noisy score at x_t (B, n, d) and the evaluations it took."""
    before = sampler.n_evaluations
    groups = torch.zeros(len(x_t), dtype=torch.long)
    post = sampler.sample(x_t, alpha, sigma, step, rng, groups=groups,
                          start=x0 if warm else None)
    score = mixed_score_identity(x_t, post.samples, post.forces, alpha, sigma, post.weights)
    return score, (sampler.n_evaluations - before) / len(x_t), post.step_size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="recipe JSON (system, generator, score_model, dikl)")
    parser.add_argument("--weights", help="trainer or sampler checkpoint whose generator "
                                          "makes the x_t (default: the untrained generator)")
    parser.add_argument("--levels", type=int, nargs="+", help="noise levels (default: 6 "
                                                               "spread over the schedule)")
    parser.add_argument("--batch", type=int, default=32, help="x_t per level")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with open(args.recipe) as handle:
        recipe = json.load(handle)
    trainer = DiKLTrainer.from_recipe(recipe)
    try:
        if args.weights:
            load_generator_weights(trainer, args.weights)
        schedule, cfg = trainer.schedule, trainer.config
        levels = args.levels or sorted({max(cfg.optimisation.min_level, round(float(k)))
                                        for k in torch.linspace(0, schedule.n_levels - 1, 6)})
        jumps = trainer.space.jumps  # the high-effort chains jump wherever they can
        reference = PosteriorSampler(trainer.posterior.energy_and_force, n_posterior=16,
                                     n_mala_steps=200, average_last=100,
                                     centre=trainer.centre, jumps=jumps,
                                     jump_every=0 if jumps is None else 1)
        rng = torch.Generator().manual_seed(args.seed)
        post = cfg.posterior
        print(f"{args.recipe}: space {cfg.schedule.space}, posterior "
              f"{'warm start' if post.warm_start else 'importance sampling'}, "
              f"{post.n_mala_steps} MALA steps, jump every {post.jump_every}, "
              f"{args.batch} x_t per level")
        print(f"{'level':>5s} {'sigma/alpha':>11s} {'|s_hat-s*|^2':>13s} {'|s*|^2':>11s} "
              f"{'ratio':>7s} {'median':>7s} {'evals':>6s} {'ref evals':>9s} {'CPU s':>6s}")
        for level in levels:
            cpu = time.process_time()
            t_index = torch.full((args.batch,), int(level), dtype=torch.long)
            with torch.no_grad():
                x0 = trainer._draw(args.batch).double()
            x_t, _ = perturb(x0, schedule, t_index, rng, trainer.centre)
            alpha, sigma = schedule.alpha(t_index), schedule.sigma(t_index)
            step = trainer.step_sizes[level]
            s_hat, cost, step = estimate(trainer.posterior, x_t, alpha, sigma, step, x0, rng,
                                         post.warm_start)
            s_ref, ref_cost, _ = estimate(reference, x_t, alpha, sigma, step, x0, rng, True)
            squared = (s_hat - s_ref).pow(2).flatten(1).sum(1)
            norms = s_ref.pow(2).flatten(1).sum(1)
            residual, norm = float(squared.mean()), float(norms.mean())
            median = float((squared / norms).median())  # robust to a few failed x_t
            ratio = float(schedule.sigmas[level] / schedule.alphas[level])
            print(f"{level:5d} {ratio:11.4g} {residual:13.4g} {norm:11.4g} "
                  f"{residual / norm:7.3f} {median:7.3f} {cost:6.0f} {ref_cost:9.0f} "
                  f"{time.process_time() - cpu:6.1f}", flush=True)
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
