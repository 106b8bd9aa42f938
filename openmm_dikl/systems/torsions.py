"""Torsions of a topology: backbone φ/ψ, side-chain χ1, and the atoms a pivot about each moves.

Like mdtraj's ``indices_phi(top)`` / ``compute_phi(traj)`` split, the topology work is done
here once (:attr:`TargetSystem.torsions`, :func:`select_torsions`); the angles themselves
are computed from positions by :func:`openmm_dikl.geometry.dihedral` or mdtraj.

A *pivot* about the central bond b–c of a torsion (a, b, c, d) rigidly rotates one side
of that bond: the atoms still connected to c once the bond b–c is cut.  The smaller side
is chosen, so that a pivot near a chain end moves few atoms.  A central bond in a ring
(proline φ, aromatic rings) has no separate sides and cannot be pivoted.

>>> from openmm_dikl import systems
>>> ala2 = systems.get("alanine_dipeptide_vacuum")
>>> [(t.name, len(t.moving_atoms)) for t in select_torsions(ala2.topology)]
[('phi ALA2', 7), ('psi ALA2', 7)]
"""
import dataclasses
from typing import Tuple

import mdtraj
import numpy as np

__all__ = ["backbone_torsions", "Torsion", "select_torsions", "bond_graph", "pivot_side",
           "torsion_levels", "TORSION_SELECTIONS"]

#: Named selections of :func:`select_torsions`.
TORSION_SELECTIONS = ("backbone", "chi1", "backbone+chi1")


def _as_mdtraj(topology):
    return topology if isinstance(topology, mdtraj.Topology) else mdtraj.Topology.from_openmm(topology)


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
    return {name: _mdtraj_torsions(_as_mdtraj(topology), name)[0] for name in ("phi", "psi")}


def _mdtraj_torsions(topology, kind):
    """(indices (m, 4), residue labels) of mdtraj's ``compute_<kind>`` on ``topology``."""
    traj = mdtraj.Trajectory(np.zeros((1, topology.n_atoms, 3), dtype=np.float32), topology)
    indices, _ = getattr(mdtraj, f"compute_{kind}")(traj)
    indices = np.asarray(indices, dtype=int).reshape(-1, 4)
    # φ and χ1 belong to the residue of their third atom (CA), ψ to that of its second (CA)
    owner = 1 if kind == "psi" else 2
    labels = [str(topology.atom(int(quad[owner])).residue) for quad in indices]
    return indices, labels


@dataclasses.dataclass(frozen=True)
class Torsion:
    """One pivotable torsion.

    Attributes
    ----------
    atoms : tuple of 4 int
        Atom indices (a, b, c, d), ordered so that d is on the moving side.
    name : str
        Label such as ``"phi ALA2"`` (or ``"torsion 0"`` for torsions given as indices).
    moving_atoms : tuple of int
        Atoms rigidly rotated about the b → c axis by a pivot (the smaller side of the
        bond b–c; contains d, not a, b or c).
    """

    atoms: Tuple[int, int, int, int]
    name: str
    moving_atoms: Tuple[int, ...]


def bond_graph(topology):
    """Neighbour sets of every atom, from ``topology.bonds()`` (list of set of int)."""
    neighbours = [set() for _ in range(topology.getNumAtoms())]
    for bond in topology.bonds():
        i, j = bond[0].index, bond[1].index
        neighbours[i].add(j)
        neighbours[j].add(i)
    return neighbours


def _side(neighbours, root, cut):
    """Atoms connected to ``root`` once the bond root–cut is removed (root excluded)."""
    seen, stack = {root}, [root]
    while stack:
        i = stack.pop()
        for j in neighbours[i]:
            if j not in seen and not (i == root and j == cut):
                seen.add(j)
                stack.append(j)
    return seen - {root}


def pivot_side(neighbours, quad, name=None):
    """The torsion ``quad`` ordered with its moving end last, and the atoms a pivot moves.

    Parameters
    ----------
    neighbours : list of set of int
        The bond graph (:func:`bond_graph`).
    quad : sequence of 4 int
        Atom indices (a, b, c, d) of a dihedral.
    name : str, optional
        Label used in error messages and in the result.

    Returns
    -------
    Torsion

    Raises
    ------
    ValueError
        If an index is out of range, the atoms are not a bonded chain a–b–c–d, or the
        bond b–c is in a ring.
    """
    a, b, c, d = (int(i) for i in quad)
    label = name or f"torsion {(a, b, c, d)}"
    n = len(neighbours)
    if len({a, b, c, d}) != 4 or min(a, b, c, d) < 0 or max(a, b, c, d) >= n:
        raise ValueError(f"{label}: atoms {(a, b, c, d)} must be 4 distinct indices of this "
                         f"topology's {n} atoms (torsions given for another topology?)")
    if not (b in neighbours[a] and c in neighbours[b] and d in neighbours[c]):
        raise ValueError(f"{label}: atoms {(a, b, c, d)} are not a bonded chain a-b-c-d in "
                         "this topology (torsions given for another topology?)")
    b_side, c_side = _side(neighbours, b, c), _side(neighbours, c, b)
    if c in b_side:
        raise ValueError(f"{label}: the central bond {b}-{c} is in a ring, so no pivot can "
                         "rotate one side of it (proline phi, aromatic rings)")
    if len(b_side) <= len(c_side):   # the smaller side; b's on a tie
        return Torsion((d, c, b, a), label, tuple(sorted(b_side)))
    return Torsion((a, b, c, d), label, tuple(sorted(c_side)))


def select_torsions(topology, torsions="backbone"):
    """The pivotable torsions of a topology.

    Parameters
    ----------
    topology : openmm.app.Topology
        The molecule, with bonds (a PDB file read by OpenMM, a prmtop, a Modeller).
    torsions : {"backbone", "chi1", "backbone+chi1"} or array-like of int, shape=(m, 4)
        ``"backbone"``: the φ and ψ of every residue that has them (capping groups ACE /
        NME recognised, chain order, φ before ψ of the same residue); a φ or ψ whose
        central bond is in a ring (proline φ) is skipped.  ``"chi1"``: the side-chain
        χ1 (N-CA-CB-XG).  Or explicit atom quadruples, each checked (bonded chain, not in
        a ring).

    Returns
    -------
    list of Torsion

    Raises
    ------
    ValueError
        For an unknown selection name, an explicit torsion that is not a bonded chain of
        this topology or whose central bond is in a ring, or a selection with no
        torsions.
    """
    neighbours = bond_graph(topology)
    if isinstance(torsions, str):
        if torsions not in TORSION_SELECTIONS:
            raise ValueError(f"torsions must be one of {TORSION_SELECTIONS} or an (m, 4) "
                             f"array of atom indices, got {torsions!r}")
        selected = _named_torsions(topology, neighbours, torsions.split("+"))
    else:
        quads = np.asarray(torsions)
        if quads.ndim != 2 or quads.shape[1] != 4 or quads.shape[0] == 0 \
                or not np.issubdtype(quads.dtype, np.integer):
            raise ValueError(f"torsions must be a non-empty (m, 4) integer array of atom "
                             f"indices, got shape {quads.shape} and dtype {quads.dtype}")
        selected = [pivot_side(neighbours, quad, f"torsion {j}") for j, quad in enumerate(quads)]
    if not selected:
        raise ValueError(f"the topology has no pivotable {torsions} torsions (no peptide "
                         "backbone, or every central bond is in a ring)")
    return selected


def _named_torsions(topology, neighbours, kinds):
    """Backbone (φ, ψ in residue order) and/or χ1 torsions; ring bonds skipped."""
    md_topology = _as_mdtraj(topology)
    found = []
    for kind in kinds:
        for name in (("phi", "psi") if kind == "backbone" else ("chi1",)):
            indices, residues = _mdtraj_torsions(md_topology, name)
            for quad, residue in zip(indices, residues):
                try:
                    torsion = pivot_side(neighbours, quad, f"{name} {residue}")
                except ValueError:  # a ring bond: proline φ
                    continue
                found.append((_residue_order(md_topology, quad), name, torsion))
    order = {"phi": 0, "psi": 1, "chi1": 2}
    found.sort(key=lambda item: (item[0], order[item[1]]))
    return [torsion for _, _, torsion in found]


def _residue_order(topology, quad):
    """Index of the residue owning a torsion (that of its CA)."""
    ca = [i for i in quad if topology.atom(int(i)).name == "CA"]
    return topology.atom(int(ca[0] if ca else quad[1])).residue.index


def torsion_levels(torsions, grouping="single"):
    """Split torsions into the levels of a torsional DiGS kernel.

    Parameters
    ----------
    torsions : list of Torsion
    grouping : {"single", "disjoint"}
        ``"single"``: one torsion per level.  ``"disjoint"``: greedy groups (in order)
        whose pivots commute: within a group no torsion's moving atoms overlap another's
        moving atoms or contain another's four atoms.

    Returns
    -------
    list of list of int
        Indices into ``torsions``, one list per level.
    """
    if grouping == "single":
        return [[j] for j in range(len(torsions))]
    if grouping != "disjoint":
        raise ValueError(f"grouping must be 'single' or 'disjoint', got {grouping!r}")
    levels = []
    for j, torsion in enumerate(torsions):
        for level in levels:
            if all(_commute(torsion, torsions[k]) for k in level):
                level.append(j)
                break
        else:
            levels.append([j])
    return levels


def _commute(first, second):
    """True if the pivots of two torsions commute and leave each other's angle unchanged."""
    a, b = set(first.moving_atoms), set(second.moving_atoms)
    return not (a & b or a & set(second.atoms) or b & set(first.atoms))
