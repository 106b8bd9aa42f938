"""The n-body and toy targets of the DiGS / DiKL papers: DW-4, LJ-13, LJ-55, MW-32, MoG-40.

Energies follow ``docs/systems.md`` exactly, in the papers' dimensionless units mapped
to OpenMM as 1 length unit = 1 nm, 1 energy unit = 1 kJ/mol and T = 1 kJ/mol / R
(≈ 120.27 K), so the reduced energy u equals the papers' energy.  Every target is built
twice from one definition: a torch function (the *twin*) and an ``openmm.System``.
2-D targets live in the xy plane; their System adds a separable 0.5·z² term per particle.
"""
import json

import numpy as np
import openmm
import torch
from openmm import unit

from ..units import REDUCED_TEMPERATURE
from .base import TargetSystem, particle_system, particle_topology, shipped_path

__all__ = ["double_well_4", "lennard_jones", "many_well_32", "mixture_of_gaussians_40",
           "many_well_positive_weight"]

DW_PARAMS = dict(a=0.9, b=-4.0, c=0.0, d0=4.0)
LJ_PARAMS = dict(eps=1.0, rm=1.0)


# ---------------------------------------------------------------------- torch twins
def _pair_distances(x):
    """Distances r_ij (i < j) of x (..., n, d) -> (..., n(n-1)/2)."""
    i, j = torch.triu_indices(x.shape[-2], x.shape[-2], offset=1)
    return (x[..., i, :] - x[..., j, :]).pow(2).sum(-1).sqrt()


def double_well_energy(x, a=0.9, b=-4.0, c=0.0, d0=4.0):
    """DW-4 reduced energy Σ_{i<j} a(d−d0)^4 + b(d−d0)^2 + c for x (..., n, 2) in nm."""
    s = _pair_distances(x) - d0
    return (a * s**4 + b * s**2 + c).sum(-1)


def lennard_jones_energy(x, eps=1.0, rm=1.0):
    """LJ reduced energy 2·Σ_{i<j} ε[(rm/r)^12 − 2(rm/r)^6] + 0.5·Σ_i |x_i − x̄|^2, x in nm."""
    inv6 = (rm / _pair_distances(x)) ** 6
    pair = 2.0 * eps * (inv6**2 - 2.0 * inv6)
    centred = x - x.mean(dim=-2, keepdim=True)
    return pair.sum(-1) + 0.5 * centred.pow(2).sum((-2, -1))


def many_well_energy(x):
    """MW-32 reduced energy Σ_k x_k^4 − 6 x_k^2 − 0.5 x_k + 0.5 y_k^2 for x (..., 16, 2)."""
    px, py = x[..., 0], x[..., 1]
    return (px**4 - 6.0 * px**2 - 0.5 * px + 0.5 * py**2).sum(-1)


def _mixture_energy(x, means, std):
    """−log of the equal-weight 2-D Gaussian mixture density at x (..., 1, 2)."""
    d2 = (x[..., 0, None, :] - means).pow(2).sum(-1)
    log_norm = np.log(len(means)) + np.log(2.0 * np.pi * std**2)
    return log_norm - torch.logsumexp(-d2 / (2.0 * std**2), dim=-1)


# ---------------------------------------------------------------------- OpenMM forces
def _pair_force(expression, n_particles, spatial_dim, parameters):
    """A force applying ``expression`` (a function of r, nm) to every pair i < j.

    In 2-D, r is the in-plane distance, so the separable z term stays separable.
    """
    r = "distance(p1, p2)" if spatial_dim == 3 else "sqrt((x1-x2)^2 + (y1-y2)^2)"
    force = openmm.CustomCompoundBondForce(2, f"{expression}; r = {r}")
    for name, value in parameters.items():
        force.addGlobalParameter(name, value)
    for i in range(n_particles):
        for j in range(i + 1, n_particles):
            force.addBond([i, j], [])
    return force


def _external_force(expression):
    """A per-particle CustomExternalForce with ``expression`` in x, y, z (nm)."""
    return openmm.CustomExternalForce(expression)


def _build(name, n_particles, spatial_dim, forces, energy_fn, start, reference_fn=None,
           description="", centre=False, **knowledge):
    """A particle TargetSystem; ``knowledge``: its sampler defaults and evaluation protocol."""
    system = particle_system(n_particles)
    for force in forces:
        if isinstance(force, openmm.CustomExternalForce):
            for i in range(n_particles):
                force.addParticle(i, [])
        system.addForce(force)
    positions = _minimised(system, start)
    if centre:
        positions = positions - positions.mean(axis=0)
    return TargetSystem(name, system, particle_topology(n_particles), positions,
                        REDUCED_TEMPERATURE, spatial_dim=spatial_dim, energy_fn=energy_fn,
                        reference_fn=reference_fn, platform="Reference",
                        description=description, translation_invariant=centre, **knowledge)


def _minimised(system, start):
    """Locally minimised copy of ``start`` (n, 3) in nm, on the Reference platform."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(start)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-6, 5000)
    xyz = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    del context
    return xyz


def _lattice_start(n_particles, spatial_dim, spacing, seed=0):
    """The ``n_particles`` points of a half-offset lattice nearest the origin, slightly jittered."""
    side = int(np.ceil(n_particles ** (1.0 / spatial_dim))) + 2
    axis = (np.arange(side) - side / 2 + 0.5) * spacing
    grid = np.stack(np.meshgrid(*([axis] * spatial_dim), indexing="ij"), -1).reshape(-1, spatial_dim)
    grid = grid[np.argsort(np.linalg.norm(grid, axis=1), kind="stable")[:n_particles]]
    grid = grid + np.random.default_rng(seed).normal(scale=0.01 * spacing, size=grid.shape)
    return np.concatenate([grid, np.zeros((n_particles, 3 - spatial_dim))], axis=1)


def _shipped_reference(filename, n_particles, spatial_dim):
    def reference(n, generator):
        data = np.load(shipped_path(filename)).astype(np.float64)
        data = data.reshape(len(data), n_particles, spatial_dim)
        if n > len(data):
            raise ValueError(f"only {len(data)} reference samples are shipped, {n} requested")
        return torch.as_tensor(data[:n])
    return reference


# ---------------------------------------------------------------------- targets
def double_well_4():
    """DW-4: four particles in 2-D with a pairwise double-well potential (8 dof)."""
    p = DW_PARAMS
    pair = _pair_force("a*(r-d0)^4 + b*(r-d0)^2 + c", 4, 2, p)
    return _build("dw4", 4, 2, [pair, _external_force("0.5*z^2")],
                  lambda x: double_well_energy(x, **p), _lattice_start(4, 2, 3.0),
                  _shipped_reference("val_split_DW4.npy", 4, 2),
                  "DW-4 pairwise double well, 4 particles in 2-D (kT = 1 kJ/mol)", centre=True,
                  evaluation="reference_set")


def lennard_jones(n_particles):
    """LJ-n cluster in 3-D with the papers' factor 2 and a harmonic centre-of-mass term.

    The centre term 0.5·Σ_i |x_i − x̄|² equals (0.5/n)·Σ_{i<j} r_ij², so the OpenMM
    System is a single pair force.
    """
    p = dict(LJ_PARAMS, inv_n=1.0 / n_particles)
    pair = _pair_force("2*eps*((rm/r)^12 - 2*(rm/r)^6) + 0.5*inv_n*r^2", n_particles, 3, p)
    reference = (_shipped_reference("val_split_LJ13-1000.npy", 13, 3) if n_particles == 13
                 else None)
    return _build(f"lj{n_particles}", n_particles, 3, [pair],
                  lambda x: lennard_jones_energy(x, **LJ_PARAMS),
                  _lattice_start(n_particles, 3, 1.1), reference,
                  f"LJ-{n_particles} Lennard-Jones cluster in 3-D (kT = 1 kJ/mol)", centre=True,
                  evaluation="reference_set" if reference is not None else None)


def _many_well_grid():
    grid = np.linspace(-5.0, 5.0, 200001)
    logp = -(grid**4 - 6.0 * grid**2 - 0.5 * grid)
    p = np.exp(logp - logp.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(grid))])
    return grid, cdf / cdf[-1]


def many_well_positive_weight():
    """Exact probability that one MW-32 x-coordinate lies in the x > 0 basin."""
    grid, cdf = _many_well_grid()
    return float(1.0 - np.interp(0.0, grid, cdf))


def _many_well_reference(n, generator):
    grid, cdf = _many_well_grid()
    uniform = torch.rand(n, 16, generator=generator, dtype=torch.float64).numpy()
    x = torch.as_tensor(np.interp(uniform, cdf, grid))
    y = torch.randn(n, 16, generator=generator, dtype=torch.float64)
    return torch.stack([x, y], dim=-1)


def many_well_32():
    """MW-32: 16 independent 2-D double wells (2^16 modes), exact reference by inverse CDF."""
    force = _external_force("x^4 - 6*x^2 - 0.5*x + 0.5*y^2 + 0.5*z^2")
    start = np.tile([1.75, 0.0, 0.0], (16, 1))
    # DiGS: a full 32-D Gaussian initialisation is never accepted; one particle per level is
    # (``benchmarks/digs_mw32.py``)
    return _build("mw32", 16, 2, [force], many_well_energy, start, _many_well_reference,
                  "MW-32 many-well, 16 independent 2-D double wells (kT = 1 kJ/mol)",
                  sampler_defaults={"digs": {"kernel": {"name": "particle_blocks", "alpha": 0.5},
                                             "step_size": 0.05, "n_denoise_steps": 1}},
                  evaluation="basins",
                  evaluation_data={"positive_weight": many_well_positive_weight()})


def _mog40_parameters():
    with open(shipped_path("mog40.json")) as handle:
        spec = json.load(handle)
    return np.asarray(spec["means"], dtype=np.float64), float(spec["std"])


def _logsumexp_expression(names, scale):
    """Lepton expression for −log Σ_k exp(−v_k/scale), stabilised by the minimum v_k."""
    smallest = names[0]
    for name in names[1:]:
        smallest = f"min({smallest}, {name})"
    total = " + ".join(f"exp(-({name} - m) / {scale!r})" for name in names)
    return f"m / {scale!r} - log({total}); m = {smallest}"


def _mixture_force(means, std, n_groups=8):
    """−log Σ_k exp(−|x − μ_k|²/(2s²)) as a CustomCVForce over ``n_groups`` partial sums.

    One flat expression over 40 components makes Lepton take ~40 s to differentiate;
    grouping keeps every expression small and the result exact.
    """
    groups = np.array_split(np.arange(len(means)), n_groups)
    force = openmm.CustomCVForce(_logsumexp_expression([f"g{j}" for j in range(n_groups)], 1.0))
    for j, group in enumerate(groups):
        distances = "; ".join(f"d{k} = (x - ({float(means[k, 0])!r}))^2 + (y - ({float(means[k, 1])!r}))^2"
                              for k in group)
        partial = openmm.CustomExternalForce(
            _logsumexp_expression([f"d{k}" for k in group], 2.0 * std**2) + "; " + distances)
        partial.addParticle(0, [])
        force.addCollectiveVariable(f"g{j}", partial)
    return force


def mixture_of_gaussians_40():
    """MoG-40: one 2-D particle, 40 equal-weight Gaussians (std softplus(1)); u = −log p."""
    means, std = _mog40_parameters()
    log_norm = np.log(len(means)) + np.log(2.0 * np.pi * std**2)
    forces = [_mixture_force(means, std), _external_force(f"0.5*z^2 + {float(log_norm)!r}")]
    means_t = torch.as_tensor(means)

    def reference(n, generator):
        idx = torch.randint(len(means), (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (means_t[idx] + std * noise)[:, None, :]

    return _build("mog40", 1, 2, forces,
                  lambda x: _mixture_energy(x, means_t, std),
                  np.array([[means[0, 0], means[0, 1], 0.0]]), reference,
                  "MoG-40 mixture of 40 Gaussians in 2-D (kT = 1 kJ/mol)",
                  sampler_defaults={"digs": {"alphas": [0.1]}},  # the DiGS paper's setting
                  evaluation="modes", evaluation_data={"mode_means": means_t, "mode_std": std})
