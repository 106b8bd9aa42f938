"""Internal coordinates of alanine dipeptide: round trip, φ/ψ, log-det, pivots."""
import math

import mdtraj
import numpy as np
import pytest
import torch
from openmm import app

from openmm_dikl import systems
from openmm_dikl.geometry import dihedral, wrap_angle
from openmm_dikl.internal import InternalCoordinates, InternalTransform
from openmm_dikl.systems.alanine import alanine_dipeptide_zmatrix

_TORSIONS = systems.get("alanine_dipeptide_vacuum").torsions
ALANINE_PHI, ALANINE_PSI = tuple(_TORSIONS["phi"][0]), tuple(_TORSIONS["psi"][0])


@pytest.fixture(scope="module")
def target():
    return systems.get("alanine_dipeptide_vacuum")


@pytest.fixture(scope="module")
def configs(target):
    """Five perturbed, randomly rotated and shifted configurations (nm)."""
    g = torch.Generator().manual_seed(0)
    x = torch.tensor(np.asarray(target.positions._value))[None].repeat(5, 1, 1)
    x = x + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    rot = torch.linalg.qr(torch.randn(5, 3, 3, generator=g, dtype=torch.float64))[0]
    return x @ rot + torch.randn(5, 1, 3, generator=g, dtype=torch.float64)


def _skew(w):
    z = torch.zeros((), dtype=w.dtype)
    return torch.stack([torch.stack([z, -w[2], w[1]]), torch.stack([w[2], z, -w[0]]),
                        torch.stack([-w[1], w[0], z])])


def test_counts_and_zmatrix_from_topology(target):
    ic = InternalCoordinates.from_target(target)
    assert (ic.n_internal, ic.n_bonds, ic.n_angles, ic.n_dihedrals) == (60, 21, 20, 19)
    pdb_topology = app.PDBFile(systems.shipped_path("alanine_dipeptide.pdb")).topology
    assert alanine_dipeptide_zmatrix(pdb_topology) == alanine_dipeptide_zmatrix(target.topology)
    # every Z-matrix bond is a chemical bond of the topology
    bonds = {frozenset((a.index, b.index)) for a, b in target.topology.bonds()}
    assert all(frozenset(row[:2]) in bonds for row in ic.placed)


def test_round_trip(target, configs):
    ic = InternalCoordinates.from_target(target)
    q, _ = ic.to_internal(configs)
    x = ic.to_cartesian(q, ic.frame(configs))
    assert torch.allclose(x, configs, atol=1e-10)
    # local frame: same internal coordinates, different placement
    q2, _ = ic.to_internal(ic.to_cartesian(q))
    assert torch.allclose(q2, q, atol=1e-10)
    # dihedrals may be unwrapped: +2π gives the same configuration
    shifted = q.clone()
    shifted[:, ic.dihedral_index] += 2 * math.pi
    assert torch.allclose(ic.to_cartesian(shifted), ic.to_cartesian(q), atol=1e-10)


def test_phi_psi_match_mdtraj(target, configs):
    ic = InternalCoordinates.from_target(target)
    q, _ = ic.to_internal(configs)
    traj = target.to_mdtraj(configs.numpy())
    phi_idx, phi = mdtraj.compute_phi(traj)
    psi_idx, psi = mdtraj.compute_psi(traj)
    assert tuple(phi_idx[0]) == ALANINE_PHI and tuple(psi_idx[0]) == ALANINE_PSI
    got_phi = q[:, ic.coordinate_index(ALANINE_PHI)].numpy()
    got_psi = q[:, ic.coordinate_index(ALANINE_PSI)].numpy()
    assert np.allclose(np.angle(np.exp(1j * (got_phi - phi[:, 0]))), 0, atol=1e-5)
    assert np.allclose(np.angle(np.exp(1j * (got_psi - psi[:, 0]))), 0, atol=1e-5)


def test_log_det_matches_autograd_jacobian(target, configs):
    """log|det ∂x/∂(q, rotation, translation)| at the identity rotation = returned log det."""
    ic = InternalCoordinates.from_target(target)
    q, log_det = ic.to_internal(configs[:3])
    rotation, translation = ic.frame(configs[:3])
    for b in range(3):
        def cartesian(v, b=b):
            r = rotation[b] @ torch.linalg.matrix_exp(_skew(v[60:63]))
            return (ic.to_cartesian(v[None, :60])[0] @ r.T + v[63:]).reshape(-1)

        v = torch.cat([q[b], torch.zeros(3, dtype=torch.float64), translation[b]])
        jac = torch.autograd.functional.jacobian(cartesian, v)
        assert jac.shape == (66, 66)
        assert abs(float(torch.linalg.slogdet(jac).logabsdet) - float(log_det[b])) < 1e-8


def test_changing_phi_rotates_the_acetyl_side_rigidly(target, configs):
    ic = InternalCoordinates.from_target(target)
    q, _ = ic.to_internal(configs[:1])
    x = ic.to_cartesian(q)
    for quad, moved in ((ALANINE_PHI, {0, 1, 2, 3, 4, 5, 7}),
                        (ALANINE_PSI, {15, 16, 17, 18, 19, 20, 21})):
        q2 = q.clone()
        q2[:, ic.coordinate_index(quad)] += 1.3
        x2 = ic.to_cartesian(q2)
        changed = {int(i) for i in torch.nonzero((x2 - x).abs().amax(-1)[0] > 1e-9)}
        assert changed == moved
        d = wrap_angle(dihedral(*(x2[0, i] for i in quad)) - dihedral(*(x[0, i] for i in quad)))
        assert abs(float(d) - 1.3) < 1e-10


def test_internal_transform(target, configs):
    ic = InternalCoordinates.from_target(target)
    transform = InternalTransform.fit(ic, configs)
    z, log_det = transform.forward(configs)
    x, log_det2 = transform.inverse(z)
    assert torch.allclose(log_det, log_det2)
    # positions agree up to a rigid motion: compare internal coordinates
    assert torch.allclose(ic.to_internal(x)[0], ic.to_internal(configs)[0], atol=1e-10)
    # log det of the z -> x map: that of q -> x plus Σ log scale
    q, ld_q = ic.to_internal(configs)
    assert torch.allclose(log_det, ld_q + torch.log(transform.scale).sum())


def test_validation(target):
    ic = InternalCoordinates.from_target(target)
    with pytest.raises(ValueError, match="shape"):
        ic.to_internal(torch.zeros(2, 21, 3))
    with pytest.raises(ValueError, match="shape"):
        ic.to_cartesian(torch.zeros(2, 59))
    with pytest.raises(ValueError, match="placed earlier"):
        InternalCoordinates((0, 1, 2), [(3, 2, 1, 4), (4, 3, 2, 1)])
    with pytest.raises(ValueError, match="22 atoms"):
        alanine_dipeptide_zmatrix(systems.get("dw4").topology)
    with pytest.raises(ValueError, match="no Z-matrix registered"):
        InternalCoordinates.from_target(systems.get("dw4"))
    with pytest.raises(ValueError, match="no Z-matrix dihedral"):
        ic.coordinate_index((0, 1, 2, 3))
