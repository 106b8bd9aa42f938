"""The :class:`TargetSystem` container shared by every target (one protocol, many systems)."""
import importlib.resources
import math
import os

import mdtraj
import numpy as np
import openmm
import torch
from openmm import app, unit

from ..bridge import OpenMMBridge
from ..units import as_kelvin, as_nm, check_bond_lengths, check_positions, kt_kjmol
from .torsions import backbone_torsions

__all__ = ["TargetSystem", "shipped_path", "as_torch_positions"]


def shipped_path(filename):
    """Absolute path of a file shipped in the package's ``systems/`` folder.

    Works from a regular (non-editable) install, where ``systems/`` is installed as
    ``openmm_dikl._shipped``, and from a source checkout.

    Raises
    ------
    FileNotFoundError
        If the file is not shipped.
    """
    candidates = []
    try:
        candidates.append(os.fspath(importlib.resources.files("openmm_dikl._shipped")))
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(os.path.join(os.path.dirname(__file__), "..", "..", "systems"))
    for folder in candidates:
        path = os.path.normpath(os.path.join(folder, filename))
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"shipped file {filename!r} not found (looked in {candidates})")


def as_torch_positions(x, name="positions"):
    """Positions (numpy, torch or Quantity) as a float64 torch tensor in nm, keeping autograd.

    Raises
    ------
    TypeError
        A Quantity that is not a length, or complex or boolean values.
    ValueError
        Values that are not numbers.
    """
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must be real numbers in nm, got a {x.dtype} tensor")
        return x if x.dtype == torch.float64 else x.to(torch.float64)
    return torch.as_tensor(as_nm(x, name))


class TargetSystem:
    """A Boltzmann target p(x) ∝ exp(−u(x)) as an OpenMM System plus a torch energy.

    Parameters
    ----------
    name : str
        Registry name.
    system : openmm.System
        The OpenMM System (3-D; 2-D targets add a separable 0.5·z² kT term).
    topology : openmm.app.Topology
        Topology with ``system.getNumParticles()`` atoms.
    positions : openmm.unit.Quantity, shape=(n_particles, 3)
        A low-energy starting configuration in nm (OpenMM layout, z = 0 for 2-D targets).
    temperature : openmm.unit.Quantity or float
        Temperature (K).
    spatial_dim : int
        2 or 3: the dimension of the torch-side configuration space.
    energy_fn : callable, optional
        Torch function x (..., n, spatial_dim) in nm -> reduced energy u (...), float64,
        differentiable.  If omitted, the energy comes from OpenMM through an
        :class:`~openmm_dikl.bridge.OpenMMBridge` (forces supply the gradient).
    reference_fn : callable, optional
        ``reference_fn(n, generator) -> torch.Tensor (n, n_particles, spatial_dim)`` in nm.
    platform : str
        Default OpenMM platform for this system ("Reference" for small systems,
        "CPU" for implicit solvent).
    description : str
        One line shown by ``openmm-dikl systems``.
    sampler_defaults : dict of str -> dict, optional
        Per-method default options of :func:`~openmm_dikl.samplers.run_sampler` for this
        system (e.g. ``{"digs": {"alphas": [0.1]}}``); the runner's generic defaults
        apply to what is not given.  See :func:`molecular_sampler_defaults`.
    evaluation : str, optional
        Name of the evaluation protocol registered (:mod:`openmm_dikl.analysis.registry`)
        by :mod:`openmm_dikl.analysis.evaluation` (``"reference_set"``, ``"modes"``,
        ``"basins"``, ``"backbone_dihedrals"``); None: energies only.
    evaluation_data : dict, optional
        What that protocol needs and only the system knows, e.g. ``mode_means``
        ((n_modes, spatial_dim) nm) for a mixture, ``positive_weight`` for MW-32, the
        ``reference`` file of a molecule.
    translation_invariant : bool, optional
        Whether u(x + c) = u(x) for every shift c; None: measured on first use
        (:attr:`translation_invariant`).
    zmatrix : tuple, optional
        ``(roots, placed)``: the molecule's Z-matrix as atom indices (three root atoms,
        then one ``(atom, bond ref, angle ref, dihedral ref)`` row per other atom), for
        :class:`~openmm_dikl.internal.InternalCoordinates`; None if none is registered.
    internal_transform : openmm_dikl.internal.InternalTransform, optional
        Standardised internal coordinates of the molecule (a centre and a width per
        coordinate; each dihedral's window is its centre ± π, so the centre says where the
        circle is cut): the space of DiKL's ``schedule.space = "internal"``
        (:mod:`openmm_dikl.dikl.spaces`).  None if none is registered.

    Attributes
    ----------
    torsions : dict of str -> numpy.ndarray, shape=(m, 4)
        Backbone dihedral atom indices ``phi`` and ``psi`` found in the topology by
        :func:`~openmm_dikl.systems.torsions.backbone_torsions` (empty arrays for
        particle systems).
    """

    def __init__(self, name, system, topology, positions, temperature, spatial_dim=3,
                 energy_fn=None, reference_fn=None, platform="Reference", description="",
                 sampler_defaults=None, evaluation=None, evaluation_data=None,
                 translation_invariant=None, zmatrix=None, internal_transform=None):
        if spatial_dim not in (2, 3):
            raise ValueError(f"spatial_dim must be 2 or 3, got {spatial_dim}")
        if not isinstance(system, openmm.System):
            raise TypeError(f"system must be an openmm.System, got {type(system).__name__}")
        if not isinstance(topology, app.Topology):
            raise TypeError(f"topology must be an openmm.app.Topology, got "
                            f"{type(topology).__name__}")
        if topology.getNumAtoms() != system.getNumParticles():
            raise ValueError(f"topology has {topology.getNumAtoms()} atoms but the System has "
                             f"{system.getNumParticles()} particles")
        self.name = name
        self.system = system
        self.topology = topology
        self.n_particles = system.getNumParticles()
        self.spatial_dim = spatial_dim
        self._bonds = np.array([[b[0].index, b[1].index] for b in topology.bonds()],
                               dtype=int).reshape(-1, 2)
        self.positions = self.as_start_positions(positions)
        self.temperature = as_kelvin(temperature) * unit.kelvin
        self.kT = kt_kjmol(self.temperature) * unit.kilojoule_per_mole
        self.platform = platform
        self.description = description
        self._energy_fn = energy_fn
        self._reference_fn = reference_fn
        self._bridge = None
        self.sampler_defaults = {method: dict(options) for method, options in
                                 (sampler_defaults or {}).items()}
        self.evaluation = evaluation
        self.evaluation_data = dict(evaluation_data or {})
        self._translation_invariant = translation_invariant
        self._torsions = None
        self.zmatrix = zmatrix
        if internal_transform is not None and (
                zmatrix is None or internal_transform.ic.roots != tuple(zmatrix[0])
                or internal_transform.ic.placed != [tuple(r) for r in zmatrix[1]]):
            raise ValueError(f"system {name!r}: internal_transform must use the registered "
                             "Z-matrix")
        self.internal_transform = internal_transform

    def __repr__(self):
        return (f"TargetSystem({self.name!r}, n_particles={self.n_particles}, "
                f"spatial_dim={self.spatial_dim}, temperature={self.temperature})")

    # ------------------------------------------------------------------ knowledge
    @property
    def torsions(self):
        """Backbone dihedrals ``{"phi": (m, 4), "psi": (m, 4)}`` (atom indices, cached)."""
        if self._torsions is None:
            self._torsions = backbone_torsions(self.topology)
        return self._torsions

    @property
    def translation_invariant(self):
        """True if the reduced energy is unchanged by a global shift (declared or measured).

        Measured (once) by shifting two perturbed copies of the starting positions by
        0.37 nm along every axis and comparing u (relative tolerance 1e-6).
        """
        if self._translation_invariant is None:
            if self.n_particles < 2:
                self._translation_invariant = False
            else:
                gen = torch.Generator().manual_seed(12345)
                start = torch.as_tensor(self.positions.value_in_unit(unit.nanometer))
                x = start[None, :, :self.spatial_dim] + 0.01 * torch.randn(
                    (2, self.n_particles, self.spatial_dim), generator=gen, dtype=torch.float64)
                with torch.no_grad():
                    u0, u1 = self.reduced_energy(x), self.reduced_energy(x + 0.37)
                self._translation_invariant = bool(torch.allclose(u0, u1, rtol=1e-6, atol=1e-6))
        return self._translation_invariant

    def sampler_options(self, method):
        """A copy of this system's default options for sampler ``method`` (dict)."""
        return dict(self.sampler_defaults.get(method, {}))

    # ------------------------------------------------------------------ energies
    @property
    def has_torch_twin(self):
        """True if the reduced energy is a pure torch function (no OpenMM call)."""
        return self._energy_fn is not None

    def bridge(self, n_workers=1, platform=None, platform_properties=None):
        """A new :class:`~openmm_dikl.bridge.OpenMMBridge` on this system (caller closes it).

        ``platform`` defaults to the system's; ``platform_properties`` (dict) is passed to
        OpenMM (e.g. ``{"Threads": "1"}`` for CPU-platform workers).
        """
        return OpenMMBridge(self.system, self.temperature, platform=platform or self.platform,
                            n_workers=n_workers, platform_properties=platform_properties)

    def reduced_energy(self, x, check_length_scale=True):
        """Reduced energy u = U/kT (dimensionless) of configurations.

        Parameters
        ----------
        x : torch.Tensor or numpy.ndarray, shape=(..., n_particles, spatial_dim)
            Positions in nm (bare numbers; a Quantity in any length unit is converted).
        check_length_scale : bool
            Check the bond lengths of the first few configurations (see
            :meth:`check_length_scale`): positions in Å given as bare numbers raise
            ValueError instead of returning energies of about 10⁶ kT.  Internal loops
            whose positions are known to be in nm may pass False.

        Returns
        -------
        torch.Tensor, shape=(...), dtype=float64
            u(x), differentiable with respect to ``x``.

        Raises
        ------
        ValueError
            On a wrong shape, or (3-D targets with bonds) a median bond length off the
            nm scale in one of the first configurations.
        """
        x = as_torch_positions(x)
        if x.shape[-2:] != (self.n_particles, self.spatial_dim):
            raise ValueError(f"{self.name}: positions must have shape (..., {self.n_particles}, "
                             f"{self.spatial_dim}) in nm, got {tuple(x.shape)}")
        if check_length_scale:
            self.check_length_scale(x, max_samples=4)
        if self._energy_fn is not None:
            return self._energy_fn(x)
        if self._bridge is None:
            self._bridge = self.bridge()
        batch_shape = x.shape[:-2]
        flat = x.reshape(-1, self.n_particles, self.spatial_dim)
        return self._bridge.reduced_energy(flat, check_length_scale=False).reshape(batch_shape)

    def reduced_force(self, x):
        """Reduced force −∇u (1/nm) at configurations x (nm), same shape as x, float64."""
        x = as_torch_positions(x).detach().requires_grad_(True)
        with torch.enable_grad():
            u = self.reduced_energy(x)
            (grad,) = torch.autograd.grad(u.sum(), x)
        return -grad

    # ------------------------------------------------------------------ data
    def reference_samples(self, n=None, seed=0):
        """Reference samples of the target, shape (n, n_particles, spatial_dim), nm, float64.

        Shipped sets (DW-4, LJ-13) are returned in stored order (the first ``n``);
        exact samplers (MW-32, MoG-40) draw ``n`` (default 10000) with ``seed``.

        Raises
        ------
        NotImplementedError
            If no reference exists for this system.
        """
        if self._reference_fn is None:
            raise NotImplementedError(f"no reference samples exist for system {self.name!r}")
        generator = torch.Generator().manual_seed(int(seed))
        return self._reference_fn(10000 if n is None else int(n), generator)

    def check_length_scale(self, x, name="positions", max_samples=100):
        """Refuse configurations whose bond lengths show they are not in nm.

        Parameters
        ----------
        x : numpy.ndarray or torch.Tensor, shape=(..., n_particles, spatial_dim)
            Positions, supposedly in nm.  Only 3-D targets with bonds in the topology
            are checked (see :func:`openmm_dikl.units.check_bond_lengths`).
        name : str
            Name used in the error message.
        max_samples : int
            Only the first ``max_samples`` configurations are checked (bounded cost).

        Raises
        ------
        ValueError
            If the median bond length is off the nm scale (e.g. positions in Å).
        """
        if self.spatial_dim != 3 or not len(self._bonds):
            return
        if isinstance(x, torch.Tensor):
            x = x.detach().reshape(-1, self.n_particles, 3)[:max_samples].cpu().numpy()
        else:
            x = np.asarray(x, dtype=np.float64).reshape(-1, self.n_particles, 3)[:max_samples]
        check_bond_lengths(x, self._bonds, name=f"{self.name}: {name}")

    def as_start_positions(self, positions, name="positions"):
        """Validate one starting configuration and return it as an OpenMM (n, 3) Quantity in nm.

        Parameters
        ----------
        positions : openmm.unit.Quantity or array-like, shape=(n_particles, 3) or (n_particles, spatial_dim)
            A Quantity in any length unit (converted), or bare numbers in nm.

        Raises
        ------
        ValueError
            Wrong shape, NaN/inf, or bond lengths off the nm scale (positions in Å).
        TypeError
            A Quantity that is not a length, or complex/boolean values.
        """
        xyz = as_nm(positions, name)
        if xyz.ndim == 2 and xyz.shape[-1] == self.spatial_dim == 2:
            xyz = _pad3(xyz)
        xyz = check_positions(xyz, self.n_particles, 3, name=name, allow_single=True)
        if xyz.shape[0] != 1:
            raise ValueError(f"{name} must be one configuration ({self.n_particles}, 3), got "
                             f"a batch of {xyz.shape[0]}")
        self.check_length_scale(xyz, name)
        return unit.Quantity(xyz[0], unit.nanometer)

    def to_openmm_positions(self, x):
        """One configuration (n, spatial_dim) in nm as an OpenMM (n, 3) Quantity (z = 0 in 2-D)."""
        xyz = check_positions(x, self.n_particles, self.spatial_dim, allow_single=True)[0]
        return unit.Quantity(_pad3(xyz), unit.nanometer)

    def to_mdtraj(self, x):
        """Configurations as an :class:`mdtraj.Trajectory` (nm; 2-D targets get z = 0).

        Parameters
        ----------
        x : array-like, shape=(n_frames, n_particles, spatial_dim) or (n_particles, spatial_dim)
            Positions in nm.
        """
        xyz = check_positions(x, self.n_particles, self.spatial_dim, allow_single=True)
        return mdtraj.Trajectory(_pad3(xyz).astype(np.float32),
                                 mdtraj.Topology.from_openmm(self.topology))


def _pad3(xyz):
    """Pad (..., n, 2) arrays with z = 0 to (..., n, 3)."""
    if xyz.shape[-1] == 3:
        return xyz
    return np.concatenate([xyz, np.zeros(xyz.shape[:-1] + (1,))], axis=-1)


def particle_topology(n_particles, element="Ar", residue="PAR"):
    """A Topology of ``n_particles`` single-atom residues (for the n-body and toy targets)."""
    topology = app.Topology()
    chain = topology.addChain()
    elem = app.Element.getBySymbol(element)
    for i in range(n_particles):
        res = topology.addResidue(residue, chain)
        topology.addAtom(f"{element}{i}", elem, res)
    return topology


def particle_system(n_particles, mass=1.0):
    """An openmm.System of ``n_particles`` particles of ``mass`` Da and no forces."""
    system = openmm.System()
    for _ in range(n_particles):
        system.addParticle(mass)
    return system


def molecular_sampler_defaults(topology, engine="torch"):
    """Default sampler options for a molecule (positions in nm, kT-scale energies).

    Parameters
    ----------
    topology : openmm.app.Topology
        The molecule.  Without bonds (particles, ions) there are no molecular defaults
        (an empty dict: the runner's generic ones apply); without backbone φ/ψ torsions
        DiGS keeps the generic Gaussian kernel.
    engine : {"torch", "openmm"}
        What ``digs`` runs: the batched torch sampler with the torsional kernel (all φ/ψ
        in one level: dipeptides, unconstrained), or the OpenMM-native torsional move
        (any peptide or protein, one torsion per level, constraints allowed).

    Returns
    -------
    dict of str -> dict

    * ``digs`` (torch): the torsional kernel on the backbone φ/ψ, σ = π (an almost
      uniform wrapped normal), one MALA denoising step of 1e-6 nm² per sweep, 32 chains
      as one batch (one bridge call evaluates all of them, ``benchmarks/digs_torch.py``);
    * ``digs`` (openmm): ``{"engine": "openmm"}``, σ = π, one GHMC step of 1 fs per level
      (``benchmarks/torsional_move.py``);
    * ``mala`` / ``hmc``: step 1e-6 nm² (HMC ε = sqrt(2·1e-6) nm), stiff bonds need it;
    * ``pt``: temperature ladder up to 800 K;
    * ``refine``: the kernel of ``generate --refine`` (``{"method": "digs"}`` where DiGS
      has the torsional kernel, MALA otherwise).
    """
    if engine not in ("torch", "openmm"):
        raise ValueError(f"engine must be 'torch' or 'openmm', got {engine!r}")
    if topology.getNumBonds() == 0:
        return {}
    torsions = backbone_torsions(topology)
    has_backbone = bool(len(torsions["phi"]) or len(torsions["psi"]))
    if engine == "openmm" and has_backbone:
        digs = {"engine": "openmm", "sigmas": math.pi, "n_denoise_steps": 1}
    elif has_backbone:
        digs = {"kernel": {"name": "torsional", "sigmas": [math.pi]}, "n_denoise_steps": 1,
                "step_size": 1e-6, "chains": 32}
    else:
        digs = {"step_size": 1e-6, "chains": 32}
    return {"digs": digs,
            "mala": {"step_size": 1e-6, "chains": 32}, "hmc": {"step_size": 1e-6, "chains": 32},
            "pt": {"t_max": 800.0},
            "refine": {"method": "digs" if has_backbone and engine == "torch" else "mala"}}
