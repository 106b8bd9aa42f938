"""openmm_dikl: diffusion-inspired enhanced sampling for OpenMM.

* Diffusive Gibbs sampling (DiGS; Chen et al., ICML 2024) as an OpenMM integrator,
  an openmmtools MCMC move and a batched torch sampler.
* Reverse diffusive KL (DiKL; He et al., AISTATS 2025) training of one-shot EGNN
  generators against OpenMM forces.

Units: positions in nm, energies in kJ/mol at the OpenMM boundary, temperatures in K;
samplers work with dimensionless reduced energies u = U/kT.
"""
import logging as _logging

# openmmtools imports pymbar, which logs a JAX / timeseries banner at WARNING level on
# import; keep it quiet unless the user has configured that logger themselves.
if _logging.getLogger("pymbar").level == _logging.NOTSET:
    _logging.getLogger("pymbar").setLevel(_logging.ERROR)

from . import metrics, systems, units  # noqa: E402
from .bridge import OpenMMBridge  # noqa: E402
from .dikl import DiKLConfig, DiKLTrainer, load_sampler  # noqa: E402
from .digs import BlockGaussianKernel, DiGSSampler, GaussianKernel, TorsionalKernel  # noqa: E402
from .integrators import DiffusiveGibbsIntegrator  # noqa: E402
from .mcmc import DiffusiveGibbsMove  # noqa: E402
from .models import (EGNNGenerator, EGNNScore, InternalCoordinateGenerator,  # noqa: E402
                     MLPGenerator, MLPScore)
from .refine import refine_samples  # noqa: E402
from .sampling import run_sampler  # noqa: E402
from .systems import TargetSystem  # noqa: E402
from .tempering import ParallelTempering  # noqa: E402
from .torch_mcmc import HMC, MALA  # noqa: E402

__version__ = "0.1.0"
__all__ = ["systems", "units", "metrics", "OpenMMBridge", "TargetSystem",
           "DiffusiveGibbsIntegrator", "DiffusiveGibbsMove", "DiGSSampler", "GaussianKernel",
           "BlockGaussianKernel", "TorsionalKernel", "MALA", "HMC", "ParallelTempering",
           "run_sampler", "EGNNGenerator", "EGNNScore", "MLPGenerator", "MLPScore",
           "InternalCoordinateGenerator", "DiKLConfig", "DiKLTrainer", "load_sampler",
           "refine_samples"]
