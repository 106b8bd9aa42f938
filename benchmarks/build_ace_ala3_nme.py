"""Build ``systems/ace_ala3_nme.pdb``: Ace-(Ala)3-Nme (42 atoms), minimised with amber14 + OBC2.

Usage (from the repository root, a few seconds on one core)::

    python benchmarks/build_ace_ala3_nme.py [--phi -70] [--psi 140] [--out systems/ace_ala3_nme.pdb]

How the coordinates are made (nothing is downloaded):

1. An ideal-geometry builder places every atom from internal coordinates (NeRF: bond
   length, bond angle, dihedral to three atoms already placed): Engh-Huber-like backbone
   bonds and angles, trans peptide bonds (ω = 180°), the requested backbone φ / ψ on all
   three alanines (default φ = −70°, ψ = 140°, polyproline II), L-chirality at every Cα
   (dihedral N–C–Cα–Cβ = +122.7°, as in PeptideBuilder), staggered methyl hydrogens.
2. The structure is minimised with ``ForceField("amber14-all.xml", "implicit/obc2.xml")``,
   ``NoCutoff``, no constraints, on the CPU platform (explicitly: OpenCL segfaults in
   minimisation on the development machine), tolerance 0.1 kJ/mol/nm, three rounds.
   The minimum is converged to the PDB's 0.001 Å rounding: a further double-precision
   minimisation (Reference platform) lowers the energy by only 0.02 kJ/mol.
3. The PDB is written with amber14 residue and atom names (ACE: HH31 CH3 HH32 HH33 C O;
   ALA: N H CA HA CB HB1 HB2 HB3 C O; NME: N H CH3 HH31 HH32 HH33), ATOM records, no
   CONECT and no CRYST1 (so no periodic box); OpenMM's PDBFile recognises all residues.

The script prints the energy before and after minimisation (kJ/mol), the final φ / ψ
(degrees), the shortest non-bonded (1-4 or further) heavy-atom and any-atom distances and
the number of constraints of the ``constraints=HBonds`` System.
"""
import argparse
import os

import numpy as np
import openmm
from openmm import app, unit

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "systems", "ace_ala3_nme.pdb")
N_ALA = 3

# bond lengths (Å) and angles (degrees)
B = {"N-CA": 1.458, "CA-C": 1.525, "C-N": 1.329, "C-O": 1.231, "CA-CB": 1.530,
     "C-H": 1.090, "N-H": 1.010, "CH3-C": 1.520, "N-CH3": 1.449}
A = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7, "CA-C-O": 120.5, "C-CA-CB": 110.1,
     "tet": 109.5, "C-N-H": 119.15, "CH3-C-N": 116.2, "C-N-CH3": 121.7}


def place(a, b, c, bond, angle, torsion):
    """Position d with |cd| = bond (Å), angle b-c-d and dihedral a-b-c-d (degrees)."""
    angle, torsion = np.radians(angle), np.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d2 = np.array([-bond * np.cos(angle), bond * np.sin(angle) * np.cos(torsion),
                   bond * np.sin(angle) * np.sin(torsion)])
    return c + d2[0] * bc + d2[1] * m + d2[2] * n


def build(phi, psi):
    """Atoms ``[(residue name, residue number, atom name, element, xyz Å)]`` in PDB order."""
    x = {}
    # ACE methyl carbon, carbonyl carbon and the first amide N define the frame
    x[("ACE", 1, "CH3")] = np.array([0.0, 0.0, 0.0])
    x[("ACE", 1, "C")] = np.array([B["CH3-C"], 0.0, 0.0])
    ang = np.radians(180.0 - A["CH3-C-N"])
    x[("ALA", 2, "N")] = x[("ACE", 1, "C")] + B["C-N"] * np.array([np.cos(ang), np.sin(ang), 0.0])
    prev_c, prev_ca = x[("ACE", 1, "C")], x[("ACE", 1, "CH3")]
    for k in range(N_ALA):
        r = 2 + k
        n = x[("ALA", r, "N")]
        ca = x[("ALA", r, "CA")] = place(prev_ca, prev_c, n, B["N-CA"], A["C-N-CA"], 180.0)
        c = x[("ALA", r, "C")] = place(prev_c, n, ca, B["CA-C"], A["N-CA-C"], phi)
        next_res = ("ALA", r + 1) if k < N_ALA - 1 else ("NME", r + 1)
        x[next_res + ("N",)] = place(n, ca, c, B["C-N"], A["CA-C-N"], psi)
        prev_ca, prev_c = ca, c
    # NME methyl carbon
    r_nme = 2 + N_ALA
    n_nme = x[("NME", r_nme, "N")]
    x[("NME", r_nme, "CH3")] = place(prev_ca, prev_c, n_nme, B["N-CH3"], A["C-N-CH3"], 180.0)

    # branches: carbonyl O, amide H, Cβ / Hα, methyl hydrogens
    def nxt_n(r):
        return x[("ALA", r + 1, "N")] if ("ALA", r + 1, "N") in x else x[("NME", r + 1, "N")]

    x[("ACE", 1, "O")] = place(x[("ALA", 2, "N")], x[("ACE", 1, "CH3")], x[("ACE", 1, "C")],
                               B["C-O"], A["CA-C-O"], 180.0)
    for j, name in enumerate(("HH31", "HH32", "HH33")):
        x[("ACE", 1, name)] = place(x[("ALA", 2, "N")], x[("ACE", 1, "C")], x[("ACE", 1, "CH3")],
                                    B["C-H"], A["tet"], 180.0 + 120.0 * j)
    prev = (x[("ACE", 1, "CH3")], x[("ACE", 1, "C")])
    for k in range(N_ALA):
        r = 2 + k
        n, ca, c = x[("ALA", r, "N")], x[("ALA", r, "CA")], x[("ALA", r, "C")]
        x[("ALA", r, "H")] = place(prev[0], prev[1], n, B["N-H"], A["C-N-H"], 0.0)
        x[("ALA", r, "O")] = place(nxt_n(r), ca, c, B["C-O"], A["CA-C-O"], 180.0)
        cb = x[("ALA", r, "CB")] = place(n, c, ca, B["CA-CB"], A["C-CA-CB"], 122.686)
        x[("ALA", r, "HA")] = place(n, c, ca, B["C-H"], A["tet"], -118.0)
        for j, name in enumerate(("HB1", "HB2", "HB3")):
            x[("ALA", r, name)] = place(n, ca, cb, B["C-H"], A["tet"], 180.0 + 120.0 * j)
        prev = (ca, c)
    x[("NME", r_nme, "H")] = place(prev[0], prev[1], n_nme, B["N-H"], A["C-N-H"], 0.0)
    for j, name in enumerate(("HH31", "HH32", "HH33")):
        x[("NME", r_nme, name)] = place(prev[1], n_nme, x[("NME", r_nme, "CH3")], B["C-H"],
                                        A["tet"], 180.0 + 120.0 * j)

    order = [("ACE", 1, n) for n in ("HH31", "CH3", "HH32", "HH33", "C", "O")]
    for k in range(N_ALA):
        order += [("ALA", 2 + k, n) for n in ("N", "H", "CA", "HA", "CB", "HB1", "HB2", "HB3",
                                             "C", "O")]
    order += [("NME", r_nme, n) for n in ("N", "H", "CH3", "HH31", "HH32", "HH33")]
    assert len(order) == len(x) == 6 + 10 * N_ALA + 6
    return [(res, num, name, name[0], x[(res, num, name)]) for res, num, name in order]


def pdb_text(atoms, xyz_angstrom, remark):
    """PDB text (ATOM records, TER, END) of the atoms at ``xyz_angstrom``."""
    lines = [f"REMARK   1 {remark}"]
    for i, ((res, num, name, element, _), pos) in enumerate(zip(atoms, xyz_angstrom)):
        padded = name if len(name) == 4 else " " + name.ljust(3)
        lines.append(f"ATOM  {i + 1:5d} {padded} {res:>3s} A{num:4d}    "
                     f"{pos[0]:8.3f}{pos[1]:8.3f}{pos[2]:8.3f}  1.00  0.00          {element:>2s}")
    last = atoms[-1]
    lines.append(f"TER   {len(atoms) + 1:5d}      {last[0]:>3s} A{last[1]:4d}")
    lines.append("END")
    return "\n".join(lines) + "\n"


def backbone_angles(topology, xyz_nm):
    """φ and ψ (degrees) of every residue that has them."""
    import mdtraj
    traj = mdtraj.Trajectory(np.asarray(xyz_nm, dtype=np.float32)[None],
                             mdtraj.Topology.from_openmm(topology))
    return (np.degrees(mdtraj.compute_phi(traj)[1][0]), np.degrees(mdtraj.compute_psi(traj)[1][0]))


def closest_nonbonded(topology, xyz_nm, heavy_only):
    """Shortest distance (nm) between atoms more than three bonds apart."""
    n = topology.getNumAtoms()
    graph = [set() for _ in range(n)]
    for bond in topology.bonds():
        graph[bond[0].index].add(bond[1].index)
        graph[bond[1].index].add(bond[0].index)
    near = []
    for i in range(n):
        seen, frontier = {i}, {i}
        for _ in range(3):
            frontier = {j for f in frontier for j in graph[f]} - seen
            seen |= frontier
        near.append(seen)
    heavy = [a.element.symbol != "H" for a in topology.atoms()]
    best = np.inf
    for i in range(n):
        for j in range(i + 1, n):
            if j in near[i] or (heavy_only and not (heavy[i] and heavy[j])):
                continue
            best = min(best, float(np.linalg.norm(xyz_nm[i] - xyz_nm[j])))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phi", type=float, default=-70.0, help="starting φ (degrees)")
    parser.add_argument("--psi", type=float, default=140.0, help="starting ψ (degrees)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output PDB")
    args = parser.parse_args()

    atoms = build(args.phi, args.psi)
    start = np.array([a[4] for a in atoms])
    tmp = args.out + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(pdb_text(atoms, start, "ideal geometry, before minimisation"))
    pdb = app.PDBFile(tmp)
    os.remove(tmp)
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                     constraints=None, removeCMMotion=False)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, {"Threads": "1"})
    context.setPositions(pdb.positions)
    e0 = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    for _ in range(3):
        openmm.LocalEnergyMinimizer.minimize(context, 0.1, 0)
    state = context.getState(getEnergy=True, getPositions=True, getForces=True)
    e1 = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    xyz = xyz - xyz.mean(axis=0)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    rms = float(np.sqrt(np.mean(np.sum(forces ** 2, axis=1))))
    phi, psi = backbone_angles(pdb.topology, xyz)
    remark = (f"Ace-(Ala)3-Nme, amber14-all + OBC2 minimum ({e1:.2f} kJ/mol), built from "
              f"phi={args.phi:g} psi={args.psi:g} by benchmarks/build_ace_ala3_nme.py")
    with open(args.out, "w") as handle:
        handle.write(pdb_text(atoms, 10.0 * xyz, remark))

    check = app.PDBFile(args.out)
    constrained = forcefield.createSystem(check.topology, nonbondedMethod=app.NoCutoff,
                                          constraints=app.HBonds)
    print(f"wrote {os.path.normpath(args.out)}: {check.topology.getNumAtoms()} atoms, "
          f"residues {[r.name for r in check.topology.residues()]}")
    print(f"energy {e0:.2f} -> {e1:.2f} kJ/mol (RMS force {rms:.3g} kJ/mol/nm)")
    print(f"phi {np.round(phi, 1)} deg, psi {np.round(psi, 1)} deg")
    print(f"closest atoms > 3 bonds apart: {closest_nonbonded(check.topology, xyz, False):.3f} nm "
          f"(heavy atoms: {closest_nonbonded(check.topology, xyz, True):.3f} nm)")
    print(f"HBonds constraints: {constrained.getNumConstraints()}")


if __name__ == "__main__":
    main()
