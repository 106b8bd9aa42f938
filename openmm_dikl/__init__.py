"""openmm_dikl: diffusion-inspired enhanced sampling for OpenMM.

* Diffusive Gibbs sampling (DiGS; Chen et al., ICML 2024) as an OpenMM integrator,
  an openmmtools MCMC move and a batched torch sampler.
* Reverse diffusive KL (DiKL; He et al., AISTATS 2025) training of one-shot EGNN
  generators against OpenMM forces.

Units: positions in nm, energies in kJ/mol at the OpenMM boundary, temperatures in K;
samplers work with dimensionless reduced energies u = U/kT.
"""
from . import systems, units
from .bridge import OpenMMBridge
from .systems import TargetSystem

__version__ = "0.1.0"
__all__ = ["systems", "units", "OpenMMBridge", "TargetSystem"]
