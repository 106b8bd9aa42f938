"""openmm_dikl: diffusion-inspired enhanced sampling for OpenMM.

* Diffusive Gibbs sampling (DiGS; Chen et al., ICML 2024) as an OpenMM integrator,
  an openmmtools MCMC move and a batched torch sampler (:mod:`openmm_dikl.samplers`).
* Reverse diffusive KL (DiKL; He et al., AISTATS 2025) training of one-shot EGNN
  generators against OpenMM forces (:mod:`openmm_dikl.dikl`, :mod:`openmm_dikl.nn`).

Units: positions in nm, energies in kJ/mol at the OpenMM boundary, temperatures in K;
samplers work with dimensionless reduced energies u = U/kT.

The layers, each importing only from those before it: ``units``, ``geometry``,
``seeding`` → ``_workers``, ``bridge``, ``io``, ``internal`` → ``systems`` → ``energy``
→ ``analysis``, ``nn``, ``samplers`` → ``dikl`` → ``cli``.  The public names below are
re-exported here and imported on first use, so ``import openmm_dikl`` (and the
command line's ``--help``) stays fast.
"""
import importlib

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "OpenMMBridge": ".bridge",
    "TargetSystem": ".systems", "from_openmm": ".systems",
    "Energy": ".energy", "EnergyAndForce": ".energy", "TransformedEnergy": ".energy",
    "Sampler": ".samplers", "ChainResult": ".samplers", "SamplingError": ".samplers",
    "DiffusiveGibbsIntegrator": ".samplers", "DiffusiveGibbsMove": ".samplers",
    "TorsionalDiffusiveGibbsMove": ".samplers", "TorsionalDiffusiveGibbsSimulation": ".samplers",
    "DiGSSampler": ".samplers", "GaussianKernel": ".samplers",
    "BlockGaussianKernel": ".samplers", "TorsionalKernel": ".samplers", "MALA": ".samplers",
    "HMC": ".samplers", "ParallelTempering": ".samplers", "run_sampler": ".samplers",
    "refine_samples": ".samplers",
    "EGNNGenerator": ".nn", "EGNNScore": ".nn", "MLPGenerator": ".nn", "MLPScore": ".nn",
    "InternalCoordinateGenerator": ".nn", "build_model": ".nn",
    "DiKLConfig": ".dikl", "DiKLTrainer": ".dikl", "load_sampler": ".dikl",
    "NeuralSampler": ".dikl", "CheckpointError": ".dikl",
}
_SUBPACKAGES = ("systems", "units", "samplers", "nn", "dikl", "analysis", "energy", "io",
                "geometry", "internal", "bridge")

__all__ = sorted(_EXPORTS) + list(_SUBPACKAGES)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module("." + name, __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
