"""Analysis: sample-quality metrics, the per-system evaluation protocol, plots.

* :mod:`~openmm_dikl.analysis.metrics` — W2, TVDs, mode and basin metrics, dihedral KLs;
* :mod:`~openmm_dikl.analysis.evaluation` — what ``openmm-dikl evaluate`` reports for
  each system (the only place that knows which metrics a system gets);
* :mod:`~openmm_dikl.analysis.plots` — histograms and Ramachandran plots (PNG).
"""
from . import metrics
from .evaluation import evaluate_array, evaluate_file

__all__ = ["metrics", "evaluate_array", "evaluate_file"]
