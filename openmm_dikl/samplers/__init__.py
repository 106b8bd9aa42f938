"""Samplers: DiGS in OpenMM and in torch, MALA / HMC, parallel tempering, the run engine.

* :mod:`~openmm_dikl.samplers.base` — the contract: :class:`Sampler`, :class:`ChainResult`;
* :mod:`~openmm_dikl.samplers.steps` — MALA / HMC steps and MH decisions;
* :mod:`~openmm_dikl.samplers.mcmc` — :class:`MALA`, :class:`HMC`;
* :mod:`~openmm_dikl.samplers.kernels` — DiGS noising kernels;
* :mod:`~openmm_dikl.samplers.digs` — :class:`DiGSSampler` (torch);
* :mod:`~openmm_dikl.samplers.integrators` — :class:`DiffusiveGibbsIntegrator` (OpenMM);
* :mod:`~openmm_dikl.samplers.moves` — :class:`DiffusiveGibbsMove` (openmmtools);
* :mod:`~openmm_dikl.samplers.torsional`, :mod:`~openmm_dikl.samplers.torsional_move` —
  torsional DiGS in OpenMM for any peptide or protein: :class:`TorsionalDiffusiveGibbsMove`
  (openmmtools), :class:`TorsionalDiffusiveGibbsSimulation` (``app.Simulation``);
* :mod:`~openmm_dikl.samplers.tempering` — :class:`ParallelTempering`;
* :mod:`~openmm_dikl.samplers.runner`, :mod:`~openmm_dikl.samplers.output`,
  :mod:`~openmm_dikl.samplers.chains` — :func:`run_sampler` and its files;
* :mod:`~openmm_dikl.samplers.refine` — :func:`refine_samples`.
"""
from .base import ChainResult, Sampler, SamplingError
from .chains import chain_seed
from .digs import DiGSSampler
from .integrators import DiffusiveGibbsIntegrator
from .kernels import BlockGaussianKernel, GaussianKernel, TorsionalKernel
from .mcmc import HMC, MALA
from .moves import DiffusiveGibbsMove
from .refine import REFINE_METHODS, refine_samples
from .runner import METHODS, make_integrator, make_torch_sampler, run_sampler
from .torsional import TorsionalDiGSEngine
from .torsional_move import TorsionalDiffusiveGibbsMove, TorsionalDiffusiveGibbsSimulation
from .tempering import ParallelTempering, ReplicaSamples, geometric_temperatures, mbar_weights

__all__ = ["Sampler", "ChainResult", "SamplingError", "DiGSSampler", "GaussianKernel",
           "BlockGaussianKernel", "TorsionalKernel", "MALA", "HMC", "DiffusiveGibbsIntegrator",
           "DiffusiveGibbsMove", "TorsionalDiGSEngine", "TorsionalDiffusiveGibbsMove",
           "TorsionalDiffusiveGibbsSimulation", "ParallelTempering", "ReplicaSamples", "mbar_weights",
           "geometric_temperatures", "run_sampler",
           "make_integrator", "make_torch_sampler", "METHODS", "refine_samples",
           "REFINE_METHODS", "chain_seed"]
