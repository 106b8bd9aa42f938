"""Sample-quality metrics for neural samplers and MCMC (numpy / scipy), in one namespace.

The evaluation protocol of ``docs/methods.md`` ("Metrics"), re-exported from the modules
that implement it:

* :mod:`~openmm_dikl.analysis.sample_metrics` — :func:`wasserstein2` (exact OT between
  equal-size sets, optionally centred, no rotation alignment), :func:`histogram_tvd`,
  :func:`energy_tvd`, :func:`distance_tvd` (200 bins spanning the reference), mode
  metrics (:func:`mode_weights`, :func:`mode_coverage`, :func:`mode_weight_error`),
  basin metrics (:func:`basin_weights`, :func:`basin_weight_error`) and
  :func:`random_rotation_permutation`;
* :mod:`~openmm_dikl.analysis.torsion_metrics` — :func:`torsion_angles`,
  :func:`phi_psi`, :func:`dihedral_kl`, :func:`ramachandran_kl` (optionally weighted);
* :mod:`~openmm_dikl.analysis.protocol` — :func:`evaluate_samples` (repeated 2,000 vs
  2,000 comparisons against the reference), :func:`noise_floor` (the same between two
  disjoint reference subsets), :func:`protocol_n_eval` (smaller sizes, with a warning)
  and :func:`reduced_energies` (batched, no autograd).

Positions are in nm, energies are reduced (units of kT), angles in radians, KL in nats.
None of these functions knows which system it scores; what a system gets is decided in
:mod:`openmm_dikl.analysis.evaluation`.

>>> import numpy as np
>>> from openmm_dikl.analysis import metrics
>>> x = np.random.default_rng(0).normal(size=(50, 3, 2))
>>> metrics.wasserstein2(x, x), metrics.distance_tvd(x, x)
(0.0, 0.0)
"""
from .protocol import (PROTOCOL_N_EVAL, evaluate_samples, noise_floor, protocol_n_eval,
                       reduced_energies)
from .sample_metrics import (DEFAULT_TVD_BINS, basin_weight_error, basin_weights,
                             distance_tvd, energy_tvd, histogram_tvd, mode_coverage,
                             mode_weight_error, mode_weights, pairwise_distances,
                             random_rotation_permutation, wasserstein2)
from .torsion_metrics import (DEFAULT_ANGLE_BINS, KL_PSEUDO_PROBABILITY, dihedral_kl, phi_psi,
                              ramachandran_kl, torsion_angles)

__all__ = ["wasserstein2", "energy_tvd", "distance_tvd", "histogram_tvd", "pairwise_distances",
           "mode_weights", "mode_coverage", "mode_weight_error", "basin_weights",
           "basin_weight_error", "dihedral_kl", "ramachandran_kl", "phi_psi", "torsion_angles",
           "evaluate_samples", "noise_floor", "protocol_n_eval", "random_rotation_permutation",
           "DEFAULT_TVD_BINS", "DEFAULT_ANGLE_BINS", "KL_PSEUDO_PROBABILITY", "PROTOCOL_N_EVAL",
           "reduced_energies"]
