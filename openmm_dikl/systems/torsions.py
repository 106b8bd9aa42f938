"""Backbone torsions of a topology: atom indices found once, reused by samplers and analysis.

Like mdtraj's ``indices_phi(top)`` / ``compute_phi(traj)`` split, the topology work is done
here once per system (:attr:`TargetSystem.torsions`); the angles themselves are computed
from positions by :func:`openmm_dikl.geometry.dihedral` or mdtraj.
"""
import mdtraj
import numpy as np

__all__ = ["backbone_torsions"]


def backbone_torsions(topology):
    """Atom indices of the backbone φ and ψ dihedrals of every residue that has them.

    Parameters
    ----------
    topology : openmm.app.Topology or mdtraj.Topology
        The molecule (mdtraj's residue and atom naming conventions; capping groups ACE /
        NME are recognised).

    Returns
    -------
    dict of str -> numpy.ndarray, shape=(m, 4), dtype=int
        ``{"phi": C(i-1)-N-CA-C, "psi": N-CA-C-N(i+1)}`` in chain order; empty (0, 4)
        arrays for particle systems and other topologies without a peptide backbone.
    """
    if not isinstance(topology, mdtraj.Topology):
        topology = mdtraj.Topology.from_openmm(topology)
    xyz = np.zeros((1, topology.n_atoms, 3), dtype=np.float32)
    traj = mdtraj.Trajectory(xyz, topology)
    out = {}
    for name, compute in (("phi", mdtraj.compute_phi), ("psi", mdtraj.compute_psi)):
        indices, _ = compute(traj)
        out[name] = np.asarray(indices, dtype=int).reshape(-1, 4)
    return out
