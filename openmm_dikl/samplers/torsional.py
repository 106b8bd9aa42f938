"""Torsional Diffusive Gibbs sampling executed by OpenMM: the engine behind the move.

One *level* of torsional DiGS (Chen et al., "Diffusive Gibbs Sampling", ICML 2024) acts
on a group of torsions θ_G of a molecule:

1. **Noise.**  θ̃_j ~ VM(θ_j(x), κ_j) for each torsion j of the group, VM the von Mises
   distribution, k(θ̃ | x) = Π_j exp(κ_j cos(θ̃_j − θ_j(x))) / (2π I₀(κ_j)).
2. **Initialisation (MH-corrected).**  Draw θ'_j ~ VM(θ̃_j, κ_j) and rigidly rotate the
   moving atoms of torsion j about its b → c axis by θ'_j − θ_j(x), which sets
   θ_j(x') = θ'_j; accept with min(1, p(x')/p(x)) = min(1, exp(−(U(x') − U(x))/kT)).
3. **Denoising.**  ``n_denoise_steps`` steps of generalised hybrid Monte Carlo (velocity
   Verlet with RATTLE constraints, full velocity refresh, Metropolis test on the total
   energy, as openmmtools' ``GHMCIntegrator``) on p(x) k(θ̃ | x), i.e. on the potential
   U(x) + kT Σ_j κ_j (1 − cos(θ_j(x) − θ̃_j)).  The kernel term is a
   ``CustomTorsionForce`` in its own force group; its per-torsion parameters (κ_j, θ̃_j)
   are updated once per level, and its global ``digs_kernel_kT`` holds kT (kJ/mol).

Levels are cycled; one *sweep* runs every level once.  Each level leaves p(x) invariant,
so the sweep does.

Why the initialisation's MH ratio is p(x')/p(x)
-----------------------------------------------
The von Mises density is symmetric in its two angles, so θ'_j ~ VM(θ̃_j, κ_j) has density
∝ k(θ̃_j | θ'_j), the conditional of θ_j given θ̃ under a uniform prior.  The rotation of
torsion j by t is the flow of the vector field v_i = ω × (x_i − x_b) on its moving atoms
(ω the unit b → c axis, which depends on unmoved atoms only), zero elsewhere.  That field
is divergence free and shifts θ_j by exactly t, so in flow-box coordinates (θ_j, the rest)
Lebesgue measure is dθ_j × (a measure on the rest): the move is a Gibbs update of θ_j
alone with proposal ∝ k(θ̃ | θ'), the kernel factors cancel, and min(1, p(x')/p(x))
remains.  Within a level the moving sets are disjoint and contain no atom of another
torsion of the level (:func:`~openmm_dikl.systems.torsions.torsion_levels`), so the flows
commute and leave each other's angles unchanged; the argument holds on the torus of the
group.  Nested torsions (φ/ψ along a chain, whose moving sides contain each other) go to
different levels.

*Constraints.*  A rigid rotation of one side of the bond b–c keeps every distance within
the moving side and every distance to b and c, hence every bond length and every
``HBonds`` / ``HAngles`` constraint (no constraint crosses the bond b–c except ones with
an end on the axis).  In mass-weighted coordinates the rotation is still an isometry of
each moving atom, so it maps the constraint manifold onto itself and preserves its
(mass-metric Hausdorff) measure, the measure that RATTLE-constrained hybrid Monte Carlo
samples; the argument above holds on the manifold.

Force evaluations (counted in :attr:`TorsionalDiGSEngine.force_evaluations`): per level
one for the proposal x' (energy and forces together), one more when the proposal is
rejected (the forces at x under the new kernel), and one per GHMC step; one at the first
level after positions are set from outside.  The pivot itself runs on the host (numpy,
one ``setPositions``), so nothing but OpenMM calls runs per force evaluation.
"""
import math

import numpy as np
import openmm
from openmm import unit

from ..units import as_kelvin, kt_kjmol

__all__ = ["KERNEL_GLOBAL", "build_kernel_force", "ghmc_denoising_integrator",
           "TorsionalDiGSEngine", "dihedrals", "pivot", "low_acceptance_message",
           "level_sigmas", "acceptance_rates", "as_picoseconds"]

#: Global parameter of the kernel force holding kT (kJ/mol); 0 disables the kernel.
KERNEL_GLOBAL = "digs_kernel_kT"
_COUNTERS = ("init_accepted", "init_proposed", "denoise_accepted", "denoise_proposed")
#: A level whose pivots are accepted below this rate after ``LOW_ACCEPTANCE_AFTER``
#: attempts is reported by :func:`low_acceptance_message`.
LOW_ACCEPTANCE, LOW_ACCEPTANCE_AFTER = 0.01, 100


def level_sigmas(sigmas, n_levels):
    """Kernel widths σ (radians) of ``n_levels`` levels from one value or one per level.

    Returns
    -------
    list of float, length n_levels

    Raises
    ------
    ValueError
        If the count does not match or a value is not finite and positive.
    """
    sig = np.asarray(sigmas, dtype=float).reshape(-1)
    if sig.size == 1:
        sig = np.repeat(sig, n_levels)
    if sig.size != n_levels or not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        raise ValueError(f"sigmas must be one positive radian value or one per level "
                         f"({n_levels}), got {sigmas!r}")
    return [float(s) for s in sig]


def as_picoseconds(timestep):
    """A time step (Quantity, or bare number in ps) as a float in ps; refuses ≤ 0."""
    value = timestep.value_in_unit(unit.picoseconds) if unit.is_quantity(timestep) else float(timestep)
    if not value > 0:
        raise ValueError(f"timestep must be > 0 ps, got {timestep}")
    return value


def acceptance_rates(statistics):
    """Per-level ``initialisation`` and ``denoising`` acceptance from the counters.

    Parameters
    ----------
    statistics : dict of str -> numpy.ndarray, shape=(n_levels,)
        Counters as in :attr:`TorsionalDiGSEngine.statistics`.

    Returns
    -------
    dict of str -> numpy.ndarray of float (NaN where nothing was proposed)
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"initialisation": statistics["init_accepted"] / statistics["init_proposed"],
                "denoising": statistics["denoise_accepted"] / statistics["denoise_proposed"]}


def low_acceptance_message(statistics, torsions, levels):
    """A warning (str) naming levels whose pivots are almost never accepted, or None.

    Parameters
    ----------
    statistics : dict of str -> numpy.ndarray, shape=(n_levels,)
        Counters as in :attr:`TorsionalDiGSEngine.statistics`.
    torsions : list of Torsion
    levels : list of list of int

    Notes
    -----
    Measured on alanine dipeptide in TIP3P water (openmmtools' ``AlanineDipeptideExplicit``,
    2,269 atoms, PME): pivots of φ / ψ accepted 7 % / 14 % at σ = π and 44 % / 37 % at
    σ = 0.3 rad, since each moves only 7 atoms.  In a protein a backbone pivot swings half
    the chain through the solvent and is essentially never accepted; use implicit solvent,
    or side-chain χ1 torsions, or a smaller σ.
    """
    proposed, accepted = statistics["init_proposed"], statistics["init_accepted"]
    stuck = np.flatnonzero((proposed >= LOW_ACCEPTANCE_AFTER) & (accepted < LOW_ACCEPTANCE * proposed))
    if not len(stuck):
        return None
    names = ", ".join(torsions[levels[i][0]].name for i in stuck[:5])
    return (f"torsional DiGS: the pivots of {len(stuck)} of {len(levels)} levels ({names}"
            f"{', ...' if len(stuck) > 5 else ''}) were accepted in under "
            f"{100 * LOW_ACCEPTANCE:.0f}% of {LOW_ACCEPTANCE_AFTER} or more attempts; in "
            "explicit solvent a pivot drags the solute through water and rarely succeeds "
            "(use implicit solvent, side-chain torsions or a smaller sigma)")


# ---------------------------------------------------------------------- host geometry
def _cross(a, b):
    """Row-wise cross product of (..., 3) arrays (numpy.cross costs ~30 µs a call)."""
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
                     a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], axis=-1)


def _dihedral(p0, p1, p2, p3):
    """One dihedral (radians) from four 3-vectors, in plain floats (no numpy call overhead)."""
    b0 = (p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2])
    b1 = (p2[0] - p1[0], p2[1] - p1[1], p2[2] - p1[2])
    b2 = (p3[0] - p2[0], p3[1] - p2[1], p3[2] - p2[2])
    n1 = (b0[1] * b1[2] - b0[2] * b1[1], b0[2] * b1[0] - b0[0] * b1[2], b0[0] * b1[1] - b0[1] * b1[0])
    n2 = (b1[1] * b2[2] - b1[2] * b2[1], b1[2] * b2[0] - b1[0] * b2[2], b1[0] * b2[1] - b1[1] * b2[0])
    y = (b0[0] * n2[0] + b0[1] * n2[1] + b0[2] * n2[2]) * math.sqrt(b1[0] ** 2 + b1[1] ** 2 + b1[2] ** 2)
    return math.atan2(y, n1[0] * n2[0] + n1[1] * n2[1] + n1[2] * n2[2])


def dihedrals(x, quads):
    """Dihedral angles (radians, IUPAC sign as OpenMM and mdtraj), shape (m,).

    Parameters
    ----------
    x : numpy.ndarray, shape=(n_atoms, 3)
        Positions (nm).
    quads : numpy.ndarray of int, shape=(m, 4)
    """
    quads = np.asarray(quads)
    if len(quads) <= 4:   # a level's few torsions: plain floats are ~10x faster than numpy
        return np.array([_dihedral(*(x[i].tolist() for i in quad)) for quad in quads])
    p = x[quads]
    b0, b1, b2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 1], p[:, 3] - p[:, 2]
    n1, n2 = _cross(b0, b1), _cross(b1, b2)
    y = np.einsum("ij,ij->i", b0, n2) * np.linalg.norm(b1, axis=1)
    return np.arctan2(y, np.einsum("ij,ij->i", n1, n2))


def pivot(x, torsion, delta):
    """Rotate the moving atoms of ``torsion`` about its b → c axis by ``delta`` radians.

    Parameters
    ----------
    x : numpy.ndarray, shape=(n_atoms, 3)
        Positions (nm), changed in place.
    torsion : openmm_dikl.systems.torsions.Torsion
    delta : float
        Rotation angle (radians); the torsion's dihedral grows by exactly ``delta``.
    """
    _, b, c, _ = torsion.atoms
    moving = np.asarray(torsion.moving_atoms)
    axis = x[c] - x[b]
    k = axis / np.linalg.norm(axis)
    v = x[moving] - x[b]
    cos, sin = math.cos(delta), math.sin(delta)
    x[moving] = x[b] + v * cos + _cross(np.broadcast_to(k, v.shape), v) * sin + np.outer(v @ k, k) * (1.0 - cos)
    return x


# ---------------------------------------------------------------------- OpenMM objects
def build_kernel_force(torsions, uses_pbc, group):
    """The kernel energy kT Σ_j κ_j (1 − cos(θ_j − θ̃_j)) as a ``CustomTorsionForce``.

    Parameters
    ----------
    torsions : list of Torsion
        One force term per torsion, with parameters (κ = 0, θ̃ = 0) until a level sets them.
    uses_pbc : bool
        Whether the System is periodic.
    group : int
        Force group of the kernel (0–31), one no force of the System uses.

    Returns
    -------
    openmm.CustomTorsionForce
        Energy in kJ/mol once the global ``digs_kernel_kT`` is set to kT (kJ/mol).
    """
    force = openmm.CustomTorsionForce(f"{KERNEL_GLOBAL}*kappa*(1 - cos(theta - theta_tilde))")
    force.addGlobalParameter(KERNEL_GLOBAL, 0.0)
    force.addPerTorsionParameter("kappa")
    force.addPerTorsionParameter("theta_tilde")
    for torsion in torsions:
        force.addTorsion(*torsion.atoms, [0.0, 0.0])
    force.setUsesPeriodicBoundaryConditions(bool(uses_pbc))
    force.setForceGroup(int(group))
    force.setName("DiGS torsional kernel")
    return force


def ghmc_denoising_integrator(temperature, timestep):
    """A GHMC integrator (one Metropolised velocity-Verlet step per ``step()``) with RATTLE.

    Every step draws fresh Maxwell–Boltzmann velocities, makes one velocity-Verlet step
    with position and velocity constraints, and accepts it with
    min(1, exp(−ΔH/kT)) on the total energy of every force group.  The forces and energy
    of the current state are kept in ``fcur`` / ``Ecur``, so a step costs exactly one
    force-and-energy evaluation; set ``needs_init`` to 1 after changing positions from
    outside (or load ``fcur`` / ``Ecur`` and set it to 0).

    Parameters
    ----------
    temperature : openmm.unit.Quantity or float
        Temperature (K); the global ``kT`` (kJ/mol) may be changed later.
    timestep : openmm.unit.Quantity or float
        Time step (ps).

    Returns
    -------
    openmm.CustomIntegrator
        Globals ``naccept`` / ``ntrials`` count accepted and attempted steps.
    """
    integrator = openmm.CustomIntegrator(as_picoseconds(timestep) * unit.picoseconds)
    for name, value in (("kT", kt_kjmol(as_kelvin(temperature))), ("needs_init", 1.0),
                        ("Ecur", 0.0), ("Enewpot", 0.0), ("ke", 0.0), ("Eold", 0.0),
                        ("Enew", 0.0), ("accept", 0.0), ("naccept", 0.0), ("ntrials", 0.0)):
        integrator.addGlobalVariable(name, value)
    for name in ("sigma", "xold", "x1", "fcur", "fnew"):
        integrator.addPerDofVariable(name, 0.0)
    integrator.beginIfBlock("needs_init > 0")
    integrator.addComputePerDof("fcur", "f")
    integrator.addComputeGlobal("Ecur", "energy")
    integrator.addComputeGlobal("needs_init", "0")
    integrator.endBlock()
    integrator.addComputePerDof("sigma", "sqrt(kT/m)")
    integrator.addComputePerDof("v", "sigma*gaussian")
    integrator.addConstrainVelocities()
    integrator.addComputeSum("ke", "0.5*m*v*v")
    integrator.addComputeGlobal("Eold", "ke + Ecur")
    integrator.addComputePerDof("xold", "x")
    integrator.addComputePerDof("v", "v + 0.5*dt*fcur/m")
    integrator.addComputePerDof("x", "x + dt*v")
    integrator.addComputePerDof("x1", "x")
    integrator.addConstrainPositions()
    integrator.addComputePerDof("v", "v + (x - x1)/dt")
    integrator.addComputePerDof("fnew", "f")
    integrator.addComputeGlobal("Enewpot", "energy")
    integrator.addComputePerDof("v", "v + 0.5*dt*fnew/m")
    integrator.addConstrainVelocities()
    integrator.addComputeSum("ke", "0.5*m*v*v")
    integrator.addComputeGlobal("Enew", "ke + Enewpot")
    integrator.addComputeGlobal("accept", "step(exp(-(Enew - Eold)/kT) - uniform)")
    integrator.addComputePerDof("x", "accept*x + (1 - accept)*xold")
    integrator.addComputePerDof("fcur", "accept*fnew + (1 - accept)*fcur")
    integrator.addComputeGlobal("Ecur", "accept*Enewpot + (1 - accept)*Ecur")
    integrator.addComputeGlobal("naccept", "naccept + accept")
    integrator.addComputeGlobal("ntrials", "ntrials + 1")
    return integrator


def _free_force_group(system):
    """The highest force group (0–31) that no force of ``system`` uses."""
    used = {force.getForceGroup() for force in system.getForces()}
    free = [group for group in range(31, -1, -1) if group not in used]
    if not free:
        raise ValueError("every force group 0-31 of the System is in use; the torsional "
                         "kernel needs one of its own")
    return free[0]


def _check_system(system):
    """Refuse virtual sites and massless (fixed) particles, which GHMC cannot move."""
    if not isinstance(system, openmm.System):
        raise TypeError(f"system must be an openmm.System, got {type(system).__name__}")
    for i in range(system.getNumParticles()):
        if system.isVirtualSite(i):
            raise ValueError(f"the System has virtual sites (first: particle {i}); the "
                             "torsional DiGS move cannot pivot them consistently")
        if system.getParticleMass(i).value_in_unit(unit.dalton) <= 0:
            raise ValueError(f"particle {i} has zero mass (a fixed atom); the torsional "
                             "DiGS move needs every particle to be mobile")


def _sampling_copy(system):
    """A copy of ``system`` without barostats, thermostats and centre-of-mass removers.

    The engine samples at fixed volume and temperature with its own Metropolis tests; a
    barostat or thermostat acting inside ``integrator.step`` would break them.
    """
    copy = openmm.XmlSerializer.clone(system)
    drop = ("Barostat", "AndersenThermostat", "CMMotionRemover")
    for index in reversed(range(copy.getNumForces())):
        if any(word in type(copy.getForce(index)).__name__ for word in drop):
            copy.removeForce(index)
    return copy


class TorsionalDiGSEngine:
    """Torsional DiGS sweeps on a private OpenMM Context (see the module docstring).

    Parameters
    ----------
    system : openmm.System
        The target (constraints allowed; no virtual sites).  It is copied; barostats,
        thermostats and centre-of-mass motion removers are left out of the copy (the
        engine samples at fixed volume), and the kernel force is added in a free group.
    torsions : list of Torsion
        Pivotable torsions (:func:`~openmm_dikl.systems.torsions.select_torsions`).
    levels : list of list of int
        Indices into ``torsions`` noised together at each level
        (:func:`~openmm_dikl.systems.torsions.torsion_levels`).
    sigmas : float or sequence of float, shape=(n_levels,)
        Kernel width σ of each level (radians): the von Mises concentration is κ = 1/σ².
    temperature : openmm.unit.Quantity or float
        Temperature (K).
    timestep : openmm.unit.Quantity or float
        GHMC time step (ps).
    n_denoise_steps : int
        GHMC steps per level.
    platform : str
        OpenMM platform name ("Reference", "CPU", "CUDA", "OpenCL").
    platform_properties : dict, optional
    seed : int
        Seed of the host draws (noise, proposals, MH) and of the integrator's random numbers.
    """

    def __init__(self, system, torsions, levels, sigmas, temperature, timestep=0.001,
                 n_denoise_steps=10, platform="CPU", platform_properties=None, seed=0):
        _check_system(system)
        self.torsions = list(torsions)
        self.levels = [list(level) for level in levels]
        if not self.levels or any(not level for level in self.levels):
            raise ValueError("levels must be a non-empty list of non-empty torsion index lists")
        self.n_denoise_steps = int(n_denoise_steps)
        if self.n_denoise_steps < 0:
            raise ValueError(f"n_denoise_steps must be >= 0, got {n_denoise_steps}")
        self.kappas = 1.0 / np.asarray(level_sigmas(sigmas, len(self.levels))) ** 2
        self._quads = np.array([t.atoms for t in self.torsions], dtype=int).reshape(-1, 4)
        sampled = _sampling_copy(system)
        self.kernel_group = _free_force_group(sampled)
        self._system_groups = sum(1 << g for g in {f.getForceGroup() for f in sampled.getForces()}) or 1
        self._kernel_force = build_kernel_force(self.torsions, sampled.usesPeriodicBoundaryConditions(),
                                                self.kernel_group)
        sampled.addForce(self._kernel_force)
        self.integrator = ghmc_denoising_integrator(temperature, timestep)
        self.integrator.setRandomNumberSeed(int(seed) % (2 ** 31 - 1) + 1)
        platform_object = openmm.Platform.getPlatformByName(platform)
        args = (platform_object, dict(platform_properties)) if platform_properties else (platform_object,)
        self.context = openmm.Context(sampled, self.integrator, *args)
        self.platform = platform
        self._rng = np.random.default_rng(seed)
        self.set_temperature(temperature)
        self.level = 0
        self.force_evaluations = 0
        self._statistics = {name: np.zeros(len(self.levels), dtype=np.int64) for name in _COUNTERS}
        self._potential = None      # U(x) (kJ/mol, no kernel) of the Context's positions
        self._pending = None        # (members, kappa, theta_tilde) of the last level run
        self._active = []           # kernel terms with κ ≠ 0 in the Context

    # ------------------------------------------------------------------ state
    @property
    def n_levels(self):
        """Number of levels (int)."""
        return len(self.levels)

    @property
    def statistics(self):
        """Per-level counters ``init_accepted``, ``init_proposed``, ``denoise_accepted``,
        ``denoise_proposed`` (dict of int arrays, shape (n_levels,), copies)."""
        return {name: values.copy() for name, values in self._statistics.items()}

    def set_temperature(self, temperature):
        """Set the temperature (K) of the kernel, the proposals and the GHMC steps."""
        self.kT = kt_kjmol(as_kelvin(temperature))
        self.integrator.setGlobalVariableByName("kT", self.kT)
        self.context.setParameter(KERNEL_GLOBAL, self.kT)
        # the stored forces and energies hold the kernel at the old kT: evaluate afresh
        self.integrator.setGlobalVariableByName("needs_init", 1.0)
        self._potential, self._pending = None, None

    def set_positions(self, positions, box_vectors=None):
        """Start from ``positions`` (Quantity or (n_atoms, 3) nm) in box ``box_vectors``."""
        if box_vectors is not None:
            self.context.setPeriodicBoxVectors(*box_vectors)
        self.context.setPositions(positions)
        self.integrator.setGlobalVariableByName("needs_init", 1.0)
        self._potential, self._pending = None, None

    def get_state(self, **kwargs):
        """``Context.getState`` of the System's own force groups (the kernel excluded).

        With ``getEnergy=True`` this costs one energy evaluation (counted).
        """
        if kwargs.get("getEnergy"):
            self.force_evaluations += 1
        return self.context.getState(groups=self._system_groups, enforcePeriodicBox=False, **kwargs)

    # ------------------------------------------------------------------ sweeps
    def sweep(self, n_sweeps=1):
        """Run ``n_sweeps`` sweeps (every level once, from the current level on)."""
        for _ in range(int(n_sweeps) * self.n_levels):
            self.run_level(self.level)
            self.level = (self.level + 1) % self.n_levels

    def _positions(self):
        state = self.context.getState(getPositions=True, enforcePeriodicBox=False)
        return state.getPositions(asNumpy=True).value_in_unit(unit.nanometer).astype(np.float64)

    def _kernel_energy(self, theta, members, kappa, theta_tilde):
        return self.kT * float(np.sum(kappa * (1.0 - np.cos(theta - theta_tilde))))

    def _resolve_potential(self, x):
        """U(x) (kJ/mol): from the GHMC's Ecur minus the last level's kernel, or evaluated."""
        if self._pending is not None and self._potential is not None:
            members, kappa, theta_tilde = self._pending
            ran = self.integrator.getGlobalVariableByName("needs_init") == 0
            total = self.integrator.getGlobalVariableByName("Ecur") if ran else self._potential
            theta = dihedrals(x, self._quads[members])
            self._potential = total - self._kernel_energy(theta, members, kappa, theta_tilde)
        elif self._potential is None:
            state = self.get_state(getEnergy=True)
            self._potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        self._pending = None
        return self._potential

    def _set_kernel(self, members, kappa, theta_tilde):
        """Give the kernel terms of ``members`` (κ, θ̃); every other term κ = 0."""
        for j in self._active:
            self._kernel_force.setTorsionParameters(j, *self.torsions[j].atoms, [0.0, 0.0])
        for j, k, t in zip(members, kappa, theta_tilde):
            self._kernel_force.setTorsionParameters(j, *self.torsions[j].atoms, [float(k), float(t)])
        if self._active or len(members):
            self._kernel_force.updateParametersInContext(self.context)
        self._active = list(members)

    def run_level(self, level):
        """One level: noise its torsions, pivot-initialise with MH, denoise with GHMC."""
        members = self.levels[level]
        kappa = np.full(len(members), self.kappas[level])
        x = self._positions()
        potential = self._resolve_potential(x)
        theta = dihedrals(x, self._quads[members])
        theta_tilde = np.angle(np.exp(1j * (theta + self._rng.vonmises(0.0, kappa))))
        self._set_kernel(members, kappa, theta_tilde)
        target = theta_tilde + self._rng.vonmises(0.0, kappa)
        proposal = x.copy()
        for j, delta in zip(members, target - theta):
            pivot(proposal, self.torsions[j], float(delta))
        accepted, total = self._initialise(x, proposal, potential, (theta, target), members,
                                           kappa, theta_tilde)
        self._statistics["init_proposed"][level] += 1
        self._statistics["init_accepted"][level] += int(accepted)
        self._denoise(level, forces_known=accepted)
        self._potential = total  # with the kernel; resolved at the next level
        self._pending = (members, kappa, theta_tilde)

    def _initialise(self, x, proposal, potential, angles, members, kappa, theta_tilde):
        """MH test of the pivot proposal; leaves the GHMC ready at the chosen state.

        ``angles`` = (θ(x), θ(x')) of the level's torsions (radians).
        """
        theta, target = angles
        self.context.setPositions(proposal)
        state = self.context.getState(getEnergy=True, getForces=True)
        self.force_evaluations += 1
        total = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        proposed = total - self._kernel_energy(target, members, kappa, theta_tilde)
        log_ratio = -(proposed - potential) / self.kT
        if math.isfinite(log_ratio) and math.log(self._rng.uniform()) < log_ratio:
            self.integrator.setPerDofVariableByName("fcur", state.getForces())
            self.integrator.setGlobalVariableByName("Ecur", total)
            self.integrator.setGlobalVariableByName("needs_init", 0.0)
            return True, total
        self.context.setPositions(x)
        self.integrator.setGlobalVariableByName("needs_init", 1.0)
        total = potential + self._kernel_energy(theta, members, kappa, theta_tilde)
        return False, total

    def _denoise(self, level, forces_known):
        """GHMC steps; without ``forces_known`` the first one evaluates the forces at x."""
        if self.n_denoise_steps == 0:
            return
        if not forces_known:
            self.force_evaluations += 1
        self.integrator.setGlobalVariableByName("naccept", 0.0)
        self.integrator.setGlobalVariableByName("ntrials", 0.0)
        self.integrator.step(self.n_denoise_steps)
        self.force_evaluations += self.n_denoise_steps
        self._statistics["denoise_accepted"][level] += int(self.integrator.getGlobalVariableByName("naccept"))
        self._statistics["denoise_proposed"][level] += int(self.integrator.getGlobalVariableByName("ntrials"))
