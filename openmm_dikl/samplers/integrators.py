"""Diffusive Gibbs sampling (DiGS) as an OpenMM ``CustomIntegrator``.

DiGS (Chen et al., ICML 2024) samples the Boltzmann density
p(x) ∝ exp(−U(x)/kT) by Gibbs sampling the joint density p(x) k(x̃|x) of the
configuration x and a noisy copy x̃ ~ k(x̃|x) = N(α x, σ² I).  One integrator step
is one Gibbs sweep at one noise level; see :class:`DiffusiveGibbsIntegrator`.

>>> import openmm
>>> from openmm_dikl import systems
>>> from openmm_dikl.samplers import DiffusiveGibbsIntegrator
>>> target = systems.get("mog40")
>>> integrator = DiffusiveGibbsIntegrator(target.temperature, alphas=[0.1],
...                                       step_size=0.1, planar=True)
>>> integrator.setRandomNumberSeed(1)
>>> context = openmm.Context(target.system, integrator,
...                          openmm.Platform.getPlatformByName("Reference"))
>>> context.setPositions(target.positions)
>>> integrator.step(100)
>>> rates = integrator.acceptance_rates
>>> sorted(rates), rates["denoising"].shape
(['denoising', 'initialisation'], (1,))
"""
import logging

import numpy as np
from openmm import unit
from openmmtools.integrators import ThermostatedIntegrator

from ..units import as_kelvin, check_samplable

__all__ = ["DiffusiveGibbsIntegrator"]

logger = logging.getLogger(__name__)

_DENOISERS = {"mala": 0, "ghmc": 1}
#: Step size the integrator reports to OpenMM: one sweep counts as 1 fs of Context time.
NOMINAL_TIMESTEP = 1.0 * unit.femtoseconds
_NM2 = unit.nanometer ** 2


def _as_1d_array(values, name, length=False):
    """Non-empty, finite 1-D float64 array; with ``length`` a Quantity is converted to nm."""
    if unit.is_quantity(values):
        if not length:
            raise ValueError(f"{name} must be dimensionless numbers, "
                             f"got a Quantity in {values.unit}")
        if not values.unit.is_compatible(unit.nanometer):
            raise ValueError(f"{name} must have units of length (nm), got {values.unit}")
        values = values.value_in_unit(unit.nanometer)
    try:
        array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from err
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


def _as_blocks(blocks):
    """None, or a list of sorted, non-empty lists of distinct particle indices."""
    if blocks is None:
        return None
    try:
        blocks = [sorted(int(i) for i in block) for block in blocks]
    except (TypeError, ValueError) as err:
        raise ValueError(f"blocks must be a sequence of particle-index sequences, "
                         f"got {blocks!r}") from err
    if not blocks or any(not block for block in blocks):
        raise ValueError("blocks must be a non-empty list of non-empty particle index lists")
    if any(i < 0 for block in blocks for i in block) or \
            any(len(set(block)) != len(block) for block in blocks):
        raise ValueError("block particle indices must be distinct and >= 0")
    return blocks


def _as_step_size(step_size):
    """The MALA step size ε as a float in nm² (Quantity compatible with nm² or float)."""
    if unit.is_quantity(step_size):
        if not step_size.unit.is_compatible(_NM2):
            raise ValueError(f"step_size must have units of length² (nm²), got {step_size.unit}")
        step_size = step_size.value_in_unit(_NM2)
    try:
        value = float(step_size)
    except (TypeError, ValueError) as err:
        raise ValueError(f"step_size must be a number in nm², got {step_size!r}") from err
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"step_size must be finite and positive (nm²), got {value}")
    return value


class DiffusiveGibbsIntegrator(ThermostatedIntegrator):
    """Diffusive Gibbs sampling (DiGS) of the Boltzmann density in Cartesian space.

    One call of ``step(1)`` performs one Gibbs sweep of the joint density
    p(x) N(x̃ | α x, σ² I) at the current noise level (α, σ), where
    p(x) ∝ exp(−U(x)/kT):

    1. *Noising* (exact Gibbs update of x̃): x̃ = α x + σ ξ, ξ ~ N(0, I) per degree of
       freedom.
    2. *Initialisation* (Metropolis-within-Gibbs update of x given x̃): propose
       x' = x̃/α + (σ/α) ξ' and accept with probability min(1, exp(−(U(x') − U(x))/kT)).
       The proposal density is proportional to the kernel term N(x̃ | α x', σ² I), so
       the kernel cancels from the Metropolis–Hastings ratio.  This is the move that
       lets the chain jump between modes.
    3. *Denoising*: ``n_denoise_steps`` Metropolis-adjusted moves on the conditional
       log p(x | x̃) = −U(x)/kT − |x̃ − α x|² / (2σ²) + const, whose gradient is
       g(x) = F(x)/kT + (α/σ²)(x̃ − α x) (1/nm), F = −∇U.

       * ``denoiser="mala"``: x' = x + ε g(x) + sqrt(2ε) ξ, accepted with the full
         Metropolis–Hastings ratio (both proposal densities).
       * ``denoiser="ghmc"``: generalised HMC with unit masses: partial momentum
         refresh p ← a p + sqrt(1 − a²) ξ, one leapfrog step of length h = sqrt(2ε),
         Metropolis test, momentum flip on rejection.  With a = 0 this is MALA.

    After every step the Context holds x (never x̃).  The level index advances by one
    per step and cycles through the schedule in the order given:
    ``alphas[0], alphas[1], …, alphas[-1], alphas[0], …``.  The DiGS paper visits the
    largest noise (smallest α) first, so pass the schedule in that order if you want
    to reproduce it.

    The sampler is mass independent: DiGS is not dynamics.  Velocities do not enter the
    positions' chain (see *Reporters* below for what they and the Context's time show).
    Particles with zero mass are never moved.

    Parameters
    ----------
    temperature : openmm.unit.Quantity or float
        Temperature of the target Boltzmann density (Quantity compatible with kelvin,
        or a bare number in K).
    alphas : sequence of float, shape=(n_levels,)
        Signal scales α of the noise schedule, each in (0, 1].
    sigmas : openmm.unit.Quantity or sequence of float, shape=(n_levels,), optional
        Noise standard deviations σ (Quantity compatible with nm, or bare numbers in
        nm), each > 0.  Default: the variance-preserving choice σ = sqrt(1 − α²) nm,
        which requires every α < 1.
    n_denoise_steps : int
        Number of MALA or GHMC steps per sweep (≥ 0).
    step_size : openmm.unit.Quantity or float
        MALA step size ε.  The gradient g is in 1/nm, so ε has units of nm²
        (Quantity compatible with nm², or a bare number in nm²).  The proposal
        displacement has standard deviation sqrt(2ε) nm per degree of freedom.  Choose
        it per system: about 1e-6 nm² for all-atom Cartesian coordinates (stiff X–H
        bonds; MALA acceptance ≈ 0.74 on alanine dipeptide), about 0.1 nm² for the toy
        targets in reduced units.
    denoiser : {"mala", "ghmc"}
        Denoising kernel.
    momentum_retention : float
        GHMC only: momentum retention a in [0, 1) of the partial refresh.
    mh_init : bool
        If False, the initialisation proposal is always accepted (unless its energy is
        not finite).  That chain is **biased** (it ignores p(x) when jumping); the option
        exists only to demonstrate why the Metropolis–Hastings test is needed.
    planar : bool
        If True, the z coordinate of every particle is never moved.  Use it for the
        2-D targets (``dw4``, ``mw32``, ``mog40``), whose OpenMM Systems carry a separable
        0.5·z² term: with z fixed at 0 the chain samples the 2-D target exactly.
    blocks : sequence of sequences of int, optional
        A blocked kernel: level k noises, initialises and denoises only the particles in
        ``blocks[k]`` (the others keep their positions), so the auxiliary variable lives on
        the block and the MH ratio is still p(x')/p(x) — exact, and for weakly coupled
        parts the initialisation acceptance is that of one block rather than of the whole
        system (MW-32, one particle per block: 5–10 % at α = 0.5 instead of 0).  One α per
        block, or one α for all.  Particle indices count from 0; particles in no block
        never move.

    Notes
    -----
    **Cost.**  Each step evaluates the System's energy and forces (one call computing
    both) exactly ``n_denoise_steps + 2`` times: once at the start for the current
    configuration (so that a change of positions, of a Context parameter or of the
    temperature between steps is always seen), once for the initialisation proposal
    and once per denoising proposal.  :attr:`force_evaluations_per_step` returns this
    number.  A rejected proposal costs no extra evaluation: the energy and force of the
    current configuration are kept in ``u_old`` and ``f_old``.

    **Constraints and virtual sites.**  DiGS samples every Cartesian degree of freedom,
    so Systems with constraints or virtual sites are not supported.  The integrator
    cannot see the System when it is built: check it with :meth:`check_system` (or
    :func:`openmm_dikl.units.check_samplable`).  The first step on a new Context
    also tests for constraints (it perturbs the positions, applies the constraint
    algorithm and checks whether anything moved); if it finds any, the step leaves the
    positions unchanged and :meth:`step` raises ``ValueError``.

    **Reporters.**  DiGS has no physical time: the integrator's step size is a nominal
    :data:`NOMINAL_TIMESTEP` (1 fs), so the Context's time counts sweeps (``Time (ps)`` of
    ``StateDataReporter`` is sweeps / 1000, its ``Speed`` nominal ns/day, i.e. sweeps per
    day / 10⁶).  After every sweep the velocities are drawn from the Maxwell–Boltzmann
    distribution at ``kT`` (with the MALA denoiser; GHMC keeps its own momenta), which
    leaves the positions' chain unchanged and makes the reported temperature that of the
    integrator (it fluctuates around T).  Potential energies are those of the sampled
    configurations.

    **Global variables** (read with ``getGlobalVariableByName``; k = 0 … n_levels − 1)

    ========================  ==========  ==================================================
    name                      unit        meaning
    ========================  ==========  ==================================================
    ``kT``                    kJ/mol      thermal energy (owned by ThermostatedIntegrator)
    ``n_levels``              —           number of schedule levels
    ``level``                 —           index of the level the next step uses
    ``alpha_k``               —           signal scale α of level k
    ``sigma_k``               nm          noise standard deviation σ of level k
    ``alpha``, ``sigma``      —, nm       α and σ of the current step
    ``kappa``                 1/nm²       α/σ², the kernel's pull towards x̃/α
    ``step_size``             nm²         MALA step size ε
    ``leapfrog_step``         nm          GHMC leapfrog step h = sqrt(2ε)
    ``momentum_retention``    —           GHMC momentum retention a
    ``n_denoise_steps``       —           denoising steps per sweep
    ``denoiser``              —           0 = MALA, 1 = GHMC
    ``mh_init``               —           1 = Metropolis test on the initialisation
    ``planar``                —           1 = z coordinates are never moved
    ``u_old``                 kJ/mol      potential energy of the current configuration
    ``log_accept``            —           log Metropolis–Hastings ratio (scratch)
    ``accept``                —           1 if the last proposal was accepted (scratch)
    ``init_accept``           —           1 if this step's initialisation was accepted
    ``denoise_iter``          —           denoising loop counter (scratch)
    ``sweep_accepted``        —           accepted denoising moves in this step
    ``init_accepted_k``       —           accepted initialisations at level k
    ``init_proposed_k``       —           initialisations proposed at level k (= steps)
    ``denoise_accepted_k``    —           accepted denoising moves at level k
    ``denoise_proposed_k``    —           denoising moves proposed at level k
    ``system_checked``        —           1 once the constraint test has run
    ``constraint_violation``  nm²         > 0 if the System has constraints
    ========================  ==========  ==================================================

    Per-DOF variables: ``x_noisy`` (x̃, nm), ``x_old`` (current configuration, nm),
    ``f_old`` (force at ``x_old``, kJ/mol/nm), ``dof_mask`` (1 for moved, 0 for fixed
    degrees of freedom) and, for GHMC, ``p`` (momentum, dimensionless).

    Examples
    --------
    The integrator survives an XML round trip (e.g. through a Context) once its
    interface is restored:

    >>> import openmm
    >>> integrator = DiffusiveGibbsIntegrator(300.0, alphas=[0.5, 0.9], step_size=1e-5)
    >>> copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(integrator))
    >>> DiffusiveGibbsIntegrator.restore_interface(copy)
    True
    >>> copy.alphas
    array([0.5, 0.9])
    """

    def __init__(self, temperature, alphas, sigmas=None, n_denoise_steps=5,
                 step_size=1e-4 * _NM2, denoiser="mala", momentum_retention=0.9,
                 mh_init=True, planar=False, blocks=None):
        kelvin = as_kelvin(temperature)
        alphas = _as_1d_array(alphas, "alphas")
        blocks = _as_blocks(blocks)
        if blocks is not None and alphas.size == 1:
            alphas = np.repeat(alphas, len(blocks))
            if sigmas is not None and not unit.is_quantity(sigmas) and np.ndim(sigmas) == 0:
                sigmas = [sigmas] * len(blocks)
        if blocks is not None and alphas.size != len(blocks):
            raise ValueError(f"blocks gives {len(blocks)} levels but alphas has {alphas.size}; "
                             "give one alpha per block or a single alpha for all")
        if np.any(alphas <= 0) or np.any(alphas > 1):
            raise ValueError(f"alphas must lie in (0, 1], got {alphas.tolist()}")
        if sigmas is None:
            if np.any(alphas >= 1):
                raise ValueError("alpha = 1 gives sigma = sqrt(1 - alpha^2) = 0; pass sigmas "
                                 "explicitly or use alphas < 1")
            sigmas = np.sqrt(1.0 - alphas ** 2)
        else:
            sigmas = _as_1d_array(sigmas, "sigmas", length=True)
            if sigmas.shape != alphas.shape:
                raise ValueError(f"sigmas has {sigmas.size} levels but alphas has {alphas.size}")
            if np.any(sigmas <= 0):
                raise ValueError(f"sigmas must be positive (nm), got {sigmas.tolist()}")
        if isinstance(n_denoise_steps, bool) or int(n_denoise_steps) != n_denoise_steps \
                or n_denoise_steps < 0:
            raise ValueError("n_denoise_steps must be a non-negative integer, "
                             f"got {n_denoise_steps!r}")
        n_denoise_steps = int(n_denoise_steps)
        epsilon = _as_step_size(step_size)
        if denoiser not in _DENOISERS:
            raise ValueError(f"denoiser must be one of {sorted(_DENOISERS)}, got {denoiser!r}")
        momentum_retention = float(momentum_retention)
        if not 0.0 <= momentum_retention < 1.0:
            raise ValueError(f"momentum_retention must lie in [0, 1), got {momentum_retention}")

        super().__init__(kelvin * unit.kelvin, NOMINAL_TIMESTEP)
        n_levels = alphas.size
        ghmc = denoiser == "ghmc"

        # ---- global variables ------------------------------------------------------
        self.addGlobalVariable("n_levels", n_levels)  # number of schedule levels
        self.addGlobalVariable("level", 0)  # level index used by the next step
        for k in range(n_levels):
            self.addGlobalVariable(f"alpha_{k}", alphas[k])  # signal scale of level k
            self.addGlobalVariable(f"sigma_{k}", sigmas[k])  # noise std of level k (nm)
        self.addGlobalVariable("alpha", 0)  # signal scale of this step
        self.addGlobalVariable("sigma", 0)  # noise std of this step (nm)
        self.addGlobalVariable("kappa", 0)  # alpha / sigma^2 (1/nm^2)
        self.addGlobalVariable("step_size", epsilon)  # MALA step size (nm^2)
        self.addGlobalVariable("leapfrog_step", np.sqrt(2.0 * epsilon))  # GHMC step (nm)
        self.addGlobalVariable("momentum_retention", momentum_retention)  # GHMC retention
        self.addGlobalVariable("n_denoise_steps", n_denoise_steps)  # denoising steps/sweep
        self.addGlobalVariable("denoiser", _DENOISERS[denoiser])  # 0 MALA, 1 GHMC
        self.addGlobalVariable("mh_init", 1 if mh_init else 0)  # MH test on initialisation
        self.addGlobalVariable("planar", 1 if planar else 0)  # 1: never move z
        self.addGlobalVariable("u_old", 0)  # energy of the current configuration (kJ/mol)
        self.addGlobalVariable("log_accept", 0)  # log MH ratio (scratch)
        self.addGlobalVariable("accept", 0)  # 1 if the last proposal was accepted
        self.addGlobalVariable("init_accept", 0)  # 1 if this step's initialisation was accepted
        self.addGlobalVariable("denoise_iter", 0)  # denoising loop counter
        self.addGlobalVariable("sweep_accepted", 0)  # accepted denoising moves this step
        for k in range(n_levels):
            self.addGlobalVariable(f"init_accepted_{k}", 0)  # accepted initialisations
            self.addGlobalVariable(f"init_proposed_{k}", 0)  # proposed initialisations
            self.addGlobalVariable(f"denoise_accepted_{k}", 0)  # accepted denoising moves
            self.addGlobalVariable(f"denoise_proposed_{k}", 0)  # proposed denoising moves
        self.addGlobalVariable("system_checked", 0)  # 1 once the constraint test ran
        self.addGlobalVariable("n_blocks", 0 if blocks is None else len(blocks))  # blocked kernel
        self.addGlobalVariable("blocks_sized", 0)  # 1 once block masks match the System
        self.addGlobalVariable("constraint_violation", 0)  # > 0: System has constraints
        # ---- per-DOF variables -----------------------------------------------------
        self.addPerDofVariable("x_noisy", 0)  # noisy copy x~ (nm); scratch in the check
        self.addPerDofVariable("x_old", 0)  # current configuration (nm)
        self.addPerDofVariable("f_old", 0)  # force at x_old (kJ/mol/nm)
        self.addPerDofVariable("dof_mask", 1)  # 1: degree of freedom is moved, 0: fixed
        self.addPerDofVariable("base_mask", 1)  # dof_mask outside blocks (planar: z fixed)
        if blocks is not None:
            for k in range(len(blocks)):
                self.addPerDofVariable(f"block_{k}", 0)  # 1 on the particles of block k
            # at least two entries: OpenMM broadcasts a one-entry per-DOF value to all
            # particles; _size_blocks fits the masks to the System at the first step
            self.set_blocks(blocks, 2 + max(max(block) for block in blocks))
        if ghmc:
            self.addPerDofVariable("p", 0)  # GHMC momentum (dimensionless, unit mass)

        # ---- one-time system check: constraints ------------------------------------
        self.beginIfBlock("system_checked = 0")
        self.addComputePerDof("x_old", "x")
        self.addComputePerDof("x_noisy", "x_old + 0.01*gaussian")
        self.addComputePerDof("x", "x_noisy")
        self.addConstrainPositions()
        self.addComputeSum("constraint_violation", "(x - x_noisy)^2")
        self.addComputePerDof("x", "x_old")
        self.addComputePerDof("base_mask", "vector(1, 1, 1 - planar)")
        self.addComputePerDof("dof_mask", "base_mask")
        self.addComputeGlobal("system_checked", "1")
        self.endBlock()

        self.beginIfBlock("constraint_violation = 0")
        # ---- noise level of this step ----------------------------------------------
        self.addComputeGlobal("alpha", self._select_level("alpha", n_levels))
        self.addComputeGlobal("sigma", self._select_level("sigma", n_levels))
        self.addComputeGlobal("kappa", "alpha / sigma^2")
        if blocks is not None:  # this level noises and moves only its block
            self.addComputePerDof("dof_mask", "base_mask*(" + self._select_level(
                "block", n_levels) + ")")
        # ---- current configuration: energy and forces (one evaluation) ---------------
        self.addComputePerDof("x_old", "x")
        self.addComputePerDof("f_old", "f")
        self.addComputeGlobal("u_old", "energy")
        # ---- noising: x~ ~ N(alpha x, sigma^2) --------------------------------------
        self.addComputePerDof("x_noisy", "alpha*x + dof_mask*sigma*gaussian")
        # ---- initialisation: x' ~ N(x~/alpha, (sigma/alpha)^2), MH on p(x) alone ---
        self.addComputePerDof("x", "x_noisy/alpha + dof_mask*(sigma/alpha)*gaussian")
        self.addComputeGlobal("log_accept", "select(mh_init, -(energy - u_old)/kT, 0)")
        self.addComputeGlobal("accept", "delta(energy - energy)*step(log_accept - log(uniform))")
        self._add_accept_reject()
        self.addComputeGlobal("init_accept", "accept")
        # ---- denoising: MALA or GHMC on log p(x | x~) -------------------------------
        self.addComputeGlobal("sweep_accepted", "0")
        self.addComputeGlobal("denoise_iter", "0")
        self.beginWhileBlock("denoise_iter < n_denoise_steps")
        if ghmc:
            self._add_ghmc_step()
        else:
            self._add_mala_step()
        self.addComputeGlobal("sweep_accepted", "sweep_accepted + accept")
        self.addComputeGlobal("denoise_iter", "denoise_iter + 1")
        self.endBlock()
        # ---- statistics ---------------------------------------------------------------
        for k in range(n_levels):
            self.addComputeGlobal(f"init_accepted_{k}",
                                  f"init_accepted_{k} + delta(level - {k})*init_accept")
            self.addComputeGlobal(f"init_proposed_{k}", f"init_proposed_{k} + delta(level - {k})")
            self.addComputeGlobal(f"denoise_accepted_{k}",
                                  f"denoise_accepted_{k} + delta(level - {k})*sweep_accepted")
            self.addComputeGlobal(f"denoise_proposed_{k}",
                                  f"denoise_proposed_{k} + delta(level - {k})*n_denoise_steps")
        # ---- advance the schedule ------------------------------------------------------
        self.addComputeGlobal("level", "(level + 1)*(1 - delta(level + 1 - n_levels))")
        # ---- reporter-facing velocities: Maxwell-Boltzmann at kT (positions unaffected) --
        if not ghmc:
            self.addComputePerDof("v", "sqrt(kT/m)*gaussian")
        self.endBlock()

    # ------------------------------------------------------------------ program pieces
    @staticmethod
    def _select_level(name, n_levels):
        """Expression picking ``name_k`` for k = level (a sum of delta terms)."""
        return " + ".join(f"delta(level - {k})*{name}_{k}" for k in range(n_levels))

    def _add_accept_reject(self):
        """Keep the proposal in x (accept = 1) or restore x_old (accept = 0).

        The force at the proposal is valid here (it was computed with the energy), so
        storing it costs no evaluation.  If-blocks rather than select() keep the number
        of per-DOF passes low (two on acceptance, one on rejection).
        """
        self.beginIfBlock("accept = 1")
        self.addComputePerDof("x_old", "x")
        self.addComputePerDof("f_old", "f")
        self.addComputeGlobal("u_old", "energy")
        self.endBlock()
        self.beginIfBlock("accept = 0")
        self.addComputePerDof("x", "x_old")
        self.endBlock()

    def _add_mala_step(self):
        """One MALA step on log p(x|x~) = -U/kT - |x~ - alpha x|^2 / (2 sigma^2)."""
        grad_old = "(f_old/kT + kappa*(x_noisy - alpha*x_old))"
        grad_new = "(f/kT + kappa*(x_noisy - alpha*x))"
        self.addComputePerDof(
            "x", f"x_old + dof_mask*(step_size*{grad_old} + sqrt(2*step_size)*gaussian)")
        # log pi(x') - log pi(x) + log q(x|x') - log q(x'|x), minus the energy term below
        self.addComputeSum(
            "log_accept",
            f"dof_mask*(((x_noisy - alpha*x_old)^2 - (x_noisy - alpha*x)^2)/(2*sigma^2)"
            f" + ((x - x_old - step_size*{grad_old})^2"
            f" - (x_old - x - step_size*{grad_new})^2)/(4*step_size))")
        self.addComputeGlobal("log_accept", "log_accept - (energy - u_old)/kT")
        self.addComputeGlobal("accept", "delta(log_accept - log_accept)"
                                        "*step(log_accept - log(uniform))")
        self._add_accept_reject()

    def _add_ghmc_step(self):
        """One GHMC step (partial refresh, one leapfrog step, MH test, flip on reject)."""
        grad_old = "(f_old/kT + kappa*(x_noisy - alpha*x_old))"
        grad_new = "(f/kT + kappa*(x_noisy - alpha*x))"
        p_new = f"(p + 0.5*leapfrog_step*({grad_old} + {grad_new}))"
        self.addComputePerDof(
            "p", "dof_mask*(momentum_retention*p + sqrt(1 - momentum_retention^2)*gaussian)")
        self.addComputePerDof(
            "x", f"x_old + dof_mask*leapfrog_step*(p + 0.5*leapfrog_step*{grad_old})")
        self.addComputeSum(
            "log_accept",
            f"dof_mask*(((x_noisy - alpha*x_old)^2 - (x_noisy - alpha*x)^2)/(2*sigma^2)"
            f" + 0.5*p^2 - 0.5*{p_new}^2)")
        self.addComputeGlobal("log_accept", "log_accept - (energy - u_old)/kT")
        self.addComputeGlobal("accept", "delta(log_accept - log_accept)"
                                        "*step(log_accept - log(uniform))")
        self.addComputePerDof("p", f"dof_mask*select(accept, {p_new}, -p)")
        self._add_accept_reject()

    # ------------------------------------------------------------------ Python API
    def step(self, steps):
        """Run ``steps`` DiGS sweeps (one sweep per step).

        Raises
        ------
        ValueError
            If the System turned out to have constraints (nothing was moved).
        """
        if self.getGlobalVariableByName("n_blocks") > 0 and \
                self.getGlobalVariableByName("blocks_sized") == 0:
            self._size_blocks()
        super().step(steps)
        if self.getGlobalVariableByName("constraint_violation") > 0:
            raise ValueError("DiffusiveGibbsIntegrator: the System has constraints, which DiGS "
                             "cannot handle (positions were left unchanged); build it with "
                             "constraints=None and rigidWater=False")

    def _size_blocks(self):
        """Fit the block masks to the bound System (particles in no block stay fixed)."""
        n_particles = len(self.getPerDofVariableByName("x_old"))
        for k in range(int(self.getGlobalVariableByName("n_blocks"))):
            mask = [tuple(v) for v in self.getPerDofVariableByName(f"block_{k}")]
            named = [i for i, v in enumerate(mask) if any(v)]
            if named and named[-1] >= n_particles:
                raise ValueError(f"block {k} names particle {named[-1]} but the System has "
                                 f"{n_particles} particles")
            mask = mask[:n_particles] + [(0.0, 0.0, 0.0)] * (n_particles - len(mask))
            self.setPerDofVariableByName(f"block_{k}", mask)
        self.setGlobalVariableByName("blocks_sized", 1)

    def set_blocks(self, blocks, n_particles):
        """Set the masks: level k moves only ``blocks[k]`` (one block per level, as in the
        constructor) of ``n_particles`` (int, the bound System's count or more); ValueError
        if the integrator has another number of blocks."""
        if int(self.getGlobalVariableByName("n_blocks")) != len(blocks):
            raise ValueError(f"the integrator has {int(self.getGlobalVariableByName('n_blocks'))} "
                             f"blocks, got {len(blocks)}")
        for k, block in enumerate(blocks):
            member = np.zeros((n_particles, 3))
            member[list(block)] = 1.0
            self.setPerDofVariableByName(f"block_{k}", [tuple(v) for v in member])

    @classmethod
    def check_system(cls, system):
        """Raise ValueError if ``system`` has constraints, virtual sites or a barostat.

        Parameters
        ----------
        system : openmm.System
            The System the integrator will run.
        """
        check_samplable(system, what="DiffusiveGibbsIntegrator")

    def _level_values(self, name):
        return np.array([self.getGlobalVariableByName(f"{name}_{k}")
                         for k in range(self.n_levels)])

    @property
    def n_levels(self):
        """Number of noise levels in the schedule (int)."""
        return int(self.getGlobalVariableByName("n_levels"))

    @property
    def level(self):
        """Index of the level the next step uses (int)."""
        return int(round(self.getGlobalVariableByName("level")))

    @level.setter
    def level(self, value):
        value = int(value)
        if not 0 <= value < self.n_levels:
            raise ValueError(f"level must lie in [0, {self.n_levels}), got {value}")
        self.setGlobalVariableByName("level", value)

    @property
    def alphas(self):
        """Signal scales α of the schedule, numpy array of shape (n_levels,)."""
        return self._level_values("alpha")

    @property
    def sigmas(self):
        """Noise standard deviations σ of the schedule, Quantity (n_levels,) in nm."""
        return self._level_values("sigma") * unit.nanometer

    @property
    def step_size(self):
        """MALA step size ε as a Quantity in nm²."""
        return self.getGlobalVariableByName("step_size") * _NM2

    @property
    def n_denoise_steps(self):
        """Number of denoising steps per sweep (int)."""
        return int(self.getGlobalVariableByName("n_denoise_steps"))

    @property
    def denoiser(self):
        """The denoising kernel, "mala" or "ghmc"."""
        code = int(self.getGlobalVariableByName("denoiser"))
        return {v: k for k, v in _DENOISERS.items()}[code]

    @property
    def force_evaluations_per_step(self):
        """Energy+force evaluations per step: ``n_denoise_steps + 2`` (int)."""
        return self.n_denoise_steps + 2

    @property
    def acceptance_counts(self):
        """Accepted and proposed moves per level since the last reset.

        Returns
        -------
        dict of str to numpy.ndarray, shape=(n_levels,), dtype=int
            ``init_accepted``, ``init_proposed``, ``denoise_accepted``,
            ``denoise_proposed``.
        """
        return {name: self._level_values(name).round().astype(np.int64)
                for name in ("init_accepted", "init_proposed", "denoise_accepted",
                             "denoise_proposed")}

    @property
    def acceptance_rates(self):
        """Acceptance rates per level since the last reset.

        Returns
        -------
        dict of str to numpy.ndarray, shape=(n_levels,)
            ``initialisation``: accepted / proposed initialisations;
            ``denoising``: accepted / proposed denoising moves.  Values lie in [0, 1];
            NaN for a level without proposals.
        """
        counts = self.acceptance_counts
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"initialisation": counts["init_accepted"] / counts["init_proposed"],
                    "denoising": counts["denoise_accepted"] / counts["denoise_proposed"]}

    def reset_statistics(self):
        """Set all acceptance counters to zero."""
        for k in range(self.n_levels):
            for name in ("init_accepted", "init_proposed", "denoise_accepted",
                         "denoise_proposed"):
                self.setGlobalVariableByName(f"{name}_{k}", 0)
