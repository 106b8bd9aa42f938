"""Analysis: sample-quality metrics, the per-system evaluation protocols, plots.

* :mod:`~openmm_dikl.analysis.metrics` — one namespace for every metric, re-exported from
  :mod:`~openmm_dikl.analysis.sample_metrics` (W2, TVDs, mode and basin weights),
  :mod:`~openmm_dikl.analysis.torsion_metrics` (torsion angles, dihedral and Ramachandran
  KL) and :mod:`~openmm_dikl.analysis.protocol` (the 2,000-vs-2,000 protocol and its
  noise floor);
* :mod:`~openmm_dikl.analysis.evaluation` — the protocols registered per system (the only
  place that knows which metrics a system gets): :func:`evaluation_metrics` (a dict),
  :func:`evaluate_array` / :func:`evaluate_file` (a table and PNGs);
* :mod:`~openmm_dikl.analysis.plots` — histograms and Ramachandran plots (PNG, Agg canvas).

Metric definitions, units and noise floors: ``docs/methods.md``.
"""
from . import metrics
from .evaluation import (Evaluation, Metric, evaluate, evaluate_array, evaluate_file,
                         evaluation_metrics, register_protocol)

__all__ = ["metrics", "evaluate", "evaluation_metrics", "evaluate_array", "evaluate_file",
           "register_protocol", "Evaluation", "Metric"]
