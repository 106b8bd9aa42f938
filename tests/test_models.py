"""EGNN / MLP generators and score networks: equivariance, centring, interface, configs."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from openmm_dikl import nn as models
from openmm_dikl.geometry import remove_mean
from openmm_dikl.nn import (EGNN, EGNNGenerator, EGNNLayer, EGNNScore, MLPGenerator,
                            MLPScore, build_model, model_config)

OPTIONS = [dict(), dict(normalize=True, tanh=True, coords_range=0.5),
           dict(aggregation="sum", coord_hidden_layer=False)]


def randomised(model, seed=0, std=0.3):
    """``model`` in float64 with all parameters redrawn: a clearly non-trivial map.

    The default init makes the coordinate head tiny (x_out ≈ x_in), which would let an
    equivariance test pass for the wrong reason.
    """
    model = model.double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(std * torch.randn(parameter.shape, generator=gen, dtype=torch.float64))
    return model


def orthogonal(d, seed, reflect):
    """A random orthogonal matrix (d, d) with det = −1 if ``reflect`` else +1."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def close(a, b, rel=1e-10):
    """Agreement to ``rel`` relative to the magnitude of the values (float64)."""
    a, b = a.detach(), b.detach()
    scale = max(float(a.abs().max()), float(b.abs().max()), 1.0)
    return float((a - b).abs().max()) <= rel * scale


def data(batch, n, d, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, d, generator=gen, dtype=torch.float64)


# ---------------------------------------------------------------------- equivariance
@pytest.mark.parametrize("d,reflect", [(2, False), (2, True), (3, False), (3, True)])
@pytest.mark.parametrize("options", OPTIONS)
def test_generator_e3_equivariance(d, reflect, options):
    n = 5
    gen = randomised(EGNNGenerator(n, d, n_layers=3, hidden=16, **options))
    z = data(6, n, d)
    x = gen(z)
    q = orthogonal(d, seed=2, reflect=reflect)
    shift = torch.tensor([1.7, -0.4, 2.5][:d], dtype=torch.float64)
    x_moved = gen(z @ q + shift)
    assert close(x_moved, x @ q)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert close(gen(z[:, perm]), x[:, perm])
    # the map is far from the identity, so the checks above are not vacuous
    assert float((x - remove_mean(z)).detach().abs().max()) > 0.1


@pytest.mark.parametrize("d,reflect", [(2, True), (3, False), (3, True)])
@pytest.mark.parametrize("options", OPTIONS[:2])
def test_score_e3_equivariance(d, reflect, options):
    n = 4
    score = randomised(EGNNScore(n, d, n_layers=2, hidden=16, time_embedding_dim=8, **options))
    x = data(5, n, d)
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    s = score(x, t)
    q = orthogonal(d, seed=3, reflect=reflect)
    shift = torch.tensor([-2.0, 0.3, 1.1][:d], dtype=torch.float64)
    assert close(score(x @ q + shift, t), s @ q)
    perm = torch.tensor([2, 3, 1, 0])
    assert close(score(x[:, perm], t), s[:, perm])
    assert float(s.detach().abs().max()) > 0.1


def test_layer_and_stack_equivariance():
    """The bare EGNN: features invariant, coordinates equivariant (incl. translation)."""
    egnn = randomised(EGNN(2, 8))
    h, x = data(3, 6, 8, seed=4), data(3, 6, 3, seed=5)
    h1, x1 = egnn(h, x)
    q = orthogonal(3, seed=6, reflect=True)
    shift = torch.tensor([0.5, -1.0, 3.0], dtype=torch.float64)
    h2, x2 = egnn(h, x @ q + shift)
    assert close(h2, h1)
    assert close(x2, x1 @ q + shift)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    h3, x3 = egnn(h[:, perm], x[:, perm])
    assert close(h3, h1[:, perm]) and close(x3, x1[:, perm])


def test_layer_exposes_update_steps():
    layer = randomised(EGNNLayer(8))
    h, x = data(2, 4, 8, seed=7), data(2, 4, 2, seed=8)
    diff = x[:, :, None] - x[:, None]
    sq = diff.pow(2).sum(-1)
    m = layer._edge_update(h, sq)
    assert m.shape == (2, 4, 4, 8)
    h_out, x_out = layer(h, x)
    assert close(x_out, layer._coord_update(x, diff, sq, m))
    assert close(h_out, layer._node_update(h, m))
    # the node aggregate excludes j = i: the self message m_ii must not enter h_i'
    manual = torch.stack([m[:, i, [j for j in range(4) if j != i]].mean(1) for i in range(4)], 1)
    assert close(layer._aggregate(m), manual)


def test_node_features_permutation_within_types():
    types = [[1, 0], [1, 0], [0, 1], [1, 0], [0, 1]]
    gen = randomised(EGNNGenerator(5, 3, n_layers=2, hidden=8, node_features=types))
    z = data(4, 5, 3, seed=9)
    x = gen(z)
    within = torch.tensor([3, 1, 4, 0, 2])          # swaps 0<->3 and 2<->4: same types
    assert close(gen(z[:, within]), x[:, within])
    across = torch.tensor([2, 1, 0, 3, 4])          # swaps a type-0 with a type-1 particle
    assert not close(gen(z[:, across]), x[:, across], rel=1e-3)


# ---------------------------------------------------------------------- generator interface
def test_generator_centres_and_accepts_uncentred_z():
    gen = EGNNGenerator(13, 3, n_layers=2, hidden=16)
    z = torch.randn(7, 13, 3) + 5.0
    x = gen(z).detach()
    assert x.shape == (7, 13, 3)
    assert float(x.mean(dim=1).abs().max()) < 1e-5
    assert torch.allclose(gen(remove_mean(z)).detach(), x, atol=1e-5)


def test_generator_sample_reproducible_and_differentiable():
    gen = EGNNGenerator(4, 2, n_layers=2, hidden=16, latent_std=2.0)
    a = gen.sample(50, generator=torch.Generator().manual_seed(3))
    b = gen.sample(50, generator=torch.Generator().manual_seed(3))
    assert a.shape == (50, 4, 2) and a.dtype == torch.float32
    assert torch.equal(a, b)
    a.pow(2).sum().backward()
    assert all(p.grad is not None for p in gen.parameters() if p.requires_grad)
    # the latent spread follows latent_std (fresh net ≈ identity on centred z)
    with torch.no_grad():
        x = gen.sample(4000, generator=torch.Generator().manual_seed(4))
    expected = 2.0 * np.sqrt(3 / 4)        # std of a centred coordinate, n = 4
    assert float(x.std()) == pytest.approx(expected, rel=0.05)
    assert gen.double().sample(3).dtype == torch.float64


@pytest.mark.parametrize("options", OPTIONS)
def test_gradients_are_finite(options):
    """Backward through both networks (incl. |x_i − x_j| at i = j with normalize) is NaN-free."""
    gen = randomised(EGNNGenerator(5, 3, n_layers=2, hidden=8, **options))
    score = randomised(EGNNScore(5, 3, n_layers=2, hidden=8, **options))
    z = data(4, 5, 3, seed=12).requires_grad_(True)
    loss = score(gen(z), torch.full((4,), 0.3, dtype=torch.float64)).pow(2).sum()
    loss.backward()
    grads = [p.grad for p in list(gen.parameters()) + list(score.parameters())] + [z.grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert float(z.grad.abs().max()) > 0


def test_chunking_does_not_change_results():
    gen = EGNNGenerator(6, 3, n_layers=2, hidden=8).double()
    score = EGNNScore(6, 3, n_layers=2, hidden=8).double()
    z = data(21, 6, 3, seed=10)
    t = torch.rand(21, dtype=torch.float64)
    whole_x, whole_s = gen(z), score(z, t)
    gen.chunk_size = score.chunk_size = 4
    assert close(gen(z), whole_x, rel=1e-12)
    assert close(score(z, t), whole_s, rel=1e-12)


def test_score_depends_on_t_and_broadcasts_scalar():
    score = randomised(EGNNScore(4, 3, n_layers=2, hidden=8))
    x = data(3, 4, 3, seed=11)
    a = score(x, torch.zeros(3, dtype=torch.float64))
    b = score(x, torch.full((3,), 0.5, dtype=torch.float64))
    assert not torch.allclose(a, b)
    assert close(score(x, torch.tensor(0.5, dtype=torch.float64)), b)
    assert float(b.detach().sum(dim=1).abs().max()) < 1e-10        # centred score


# ---------------------------------------------------------------------- MLPs
@torch.no_grad()
def test_mlp_generator_and_score_shapes_and_no_centring():
    gen = MLPGenerator(16, 2, hidden=32, n_layers=2)
    x = gen.sample(10, generator=torch.Generator().manual_seed(0))
    assert x.shape == (10, 16, 2) and gen.n_particles == 16 and gen.spatial_dim == 2
    assert float(x.mean(dim=1).abs().max()) > 1e-4          # not centred by default
    score = MLPScore(1, 2, hidden=32, n_layers=2)
    s = score(torch.randn(9, 1, 2), torch.rand(9))
    assert s.shape == (9, 1, 2)
    centred = MLPGenerator(5, 3, hidden=16, n_layers=1, centre=True)
    assert float(centred(torch.randn(4, 5, 3) + 3.0).mean(dim=1).abs().max()) < 1e-5
    centred_score = MLPScore(5, 3, hidden=16, n_layers=1, centre=True)
    assert float(centred_score(torch.randn(4, 5, 3), torch.rand(4)).sum(dim=1).abs().max()) < 1e-5


# ---------------------------------------------------------------------- configs
CONFIG_CASES = [
    lambda: EGNNGenerator(5, 3, n_layers=2, hidden=8, node_features=np.eye(5)[:, :2],
                          latent_std=0.7, normalize=True, tanh=True, coords_range=2.0,
                          activation=nn.Tanh),
    lambda: EGNNScore(4, 2, n_layers=1, hidden=8, time_embedding_dim=6, aggregation="sum",
                      coord_hidden_layer=False),
    lambda: MLPGenerator(16, 2, hidden=16, n_layers=2, latent_std=3.0),
    lambda: MLPScore(1, 2, hidden=16, n_layers=3, time_embedding_dim=4, centre=True),
]


@pytest.mark.parametrize("make", CONFIG_CASES)
def test_config_round_trip(make):
    torch.manual_seed(0)
    model = make()
    config = json.loads(json.dumps(model_config(model)))    # survives a JSON checkpoint
    copy = build_model(config)
    assert type(copy) is type(model) and copy.config == model.config
    copy.load_state_dict(model.state_dict())
    x = torch.randn(3, model.n_particles, model.spatial_dim)
    if isinstance(model, (EGNNScore, MLPScore)):
        t = torch.rand(3)
        assert torch.equal(copy(x, t), model(x, t))
    else:
        assert torch.equal(copy(x), model(x))
    assert type(model).from_config(config).config == model.config


def test_bad_arguments_raise_value_error():
    gen = EGNNGenerator(4, 2, n_layers=1, hidden=8)
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 4, 2\)"):
        gen(torch.randn(3, 4, 3))
    score = EGNNScore(4, 2, n_layers=1, hidden=8)
    with pytest.raises(ValueError, match="t must be"):
        score(torch.randn(3, 4, 2), torch.rand(2))
    with pytest.raises(ValueError, match="nn.Module class"):
        EGNNGenerator(4, 2, activation=nn.SiLU())
    with pytest.raises(ValueError, match="node_features"):
        EGNNGenerator(4, 2, node_features=np.ones((3, 2)))
    with pytest.raises(ValueError, match="aggregation"):
        EGNNLayer(8, aggregation="max")
    with pytest.raises(ValueError, match="unknown model class"):
        build_model({"class": "Transformer"})
    with pytest.raises(ValueError, match="'class'"):
        build_model({"n_particles": 4})
    with pytest.raises(ValueError, match="not a EGNNScore"):
        EGNNScore.from_config(gen.config)
    with pytest.raises(ValueError, match="latent_std"):
        MLPGenerator(1, 2, latent_std=0.0)


def test_atom_type_features_from_topology():
    from openmm import app

    from openmm_dikl.systems import shipped_path
    topology = app.PDBFile(shipped_path("alanine_dipeptide.pdb")).topology
    features = models.atom_type_features(topology)
    assert features.shape == (22, 4)                       # elements C, H, N, O
    assert np.allclose(features.sum(axis=1), 1.0)


# ---------------------------------------------------------------------- molecule networks
ALA2_GROUPS = [[0, 1, 2, 3, 4, 5], [16, 17, 18, 19, 20, 21], [10, 11, 12, 13]]


def ala2_positions():
    from openmm import app

    from openmm_dikl.systems import shipped_path
    pdb = app.PDBFile(shipped_path("alanine_dipeptide.pdb"))
    return pdb.topology, np.asarray(pdb.getPositions(asNumpy=True)._value)


def test_quaternion_rotation_is_proper_and_uniform():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(20000, 4, generator=gen, dtype=torch.float64)
    rot = models.quaternion_rotation(q)
    eye = torch.eye(3, dtype=torch.float64).expand(20000, 3, 3)
    assert torch.allclose(rot @ rot.transpose(-1, -2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(20000, dtype=torch.float64))
    # Haar measure: E[R] = 0 and a rotated unit vector is uniform on the sphere
    assert rot.mean(0).abs().max() < 0.02
    v = rot[:, :, 2]
    assert float((v[:, 0] > 0).double().mean()) == pytest.approx(0.5, abs=0.02)
    assert torch.allclose(models.quaternion_rotation(3.0 * q[:5]), rot[:5])


@pytest.mark.parametrize("d", [2, 3])
def test_random_rotation_is_proper_uniform_and_seeded(d):
    from openmm_dikl.geometry import random_rotation
    rot = random_rotation(20000, d, torch.Generator().manual_seed(1), torch.float64)
    eye = torch.eye(d, dtype=torch.float64).expand(20000, d, d)
    assert rot.shape == (20000, d, d) and rot.dtype == torch.float64
    assert torch.allclose(rot @ rot.transpose(-1, -2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(20000, dtype=torch.float64))
    # Haar: E[R] = 0 (each entry has std <= 1/sqrt(d), so 0.02 is > 2.8 standard errors)
    assert rot.mean(0).abs().max() < 0.02
    again = random_rotation(20000, d, torch.Generator().manual_seed(1), torch.float64)
    assert torch.equal(again, rot)
    with pytest.raises(ValueError, match="4-D"):
        random_rotation(2, 4)


def test_templated_generator_starts_at_the_template_rotated_and_round_trips():
    _, xyz = ala2_positions()
    gen = EGNNGenerator(22, 3, n_layers=2, hidden=16, latent_std=0.002, template=xyz,
                        normalize=True, norm_constant=1.0, tanh=True, coords_range=0.5).double()
    with torch.no_grad():
        x = gen.sample(2000, generator=torch.Generator().manual_seed(0))
    template = torch.as_tensor(xyz - xyz.mean(0))
    # a fresh network (tiny coordinate head) keeps the template's geometry: every
    # interatomic distance within a few latent widths of the template's
    d_sample = torch.cdist(x, x)
    d_template = torch.cdist(template, template)
    assert float((d_sample - d_template).abs().max()) < 0.03
    assert float((d_sample - d_template).abs().mean()) < 0.004
    # ... in uniformly random orientations: every atom's mean position is ~0 although
    # the template's atoms lie up to 0.45 nm from its centroid
    assert float(template.norm(dim=-1).max()) > 0.4
    assert float(x.mean(0).norm(dim=-1).max()) < 0.03
    # and the orientation is not fixed: the first atom points everywhere
    assert float(x[:, 0, 2].std()) > 0.5 * float(template[0].norm()) / np.sqrt(3)
    copy = build_model(json.loads(json.dumps(gen.config))).double()
    copy.load_state_dict(gen.state_dict())
    z = torch.randn(5, 22, 3, dtype=torch.float64)
    assert torch.equal(copy(z), gen(z))
    assert np.allclose(copy.config["template"], xyz)
    with pytest.raises(ValueError, match="template must be"):
        EGNNGenerator(22, 3, template=xyz[:5])
    assert "template" not in EGNNGenerator(22, 3).config


@pytest.mark.parametrize("reflect", [False, True])
def test_frame_mlp_score_rotation_equivariance(reflect):
    _, xyz = ala2_positions()
    score = randomised(models.FrameMLPScore(22, ALA2_GROUPS, hidden=16, n_layers=2), std=0.2)
    gen = torch.Generator().manual_seed(3)
    x = torch.as_tensor(xyz)[None] + 0.01 * torch.randn(4, 22, 3, generator=gen,
                                                        dtype=torch.float64)
    t = torch.rand(4, generator=gen, dtype=torch.float64)
    rot = orthogonal(3, seed=5, reflect=reflect)
    out = score(x, t)
    moved = score(x @ rot.T + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), t)
    assert out.abs().max() > 1e-3
    assert torch.allclose(out.sum(1), torch.zeros(4, 3, dtype=torch.float64), atol=1e-12)
    if reflect:
        # a chiral molecule: the network is not reflection equivariant (by design)
        assert not close(moved, out @ rot.T, rel=1e-3)
    else:
        assert close(moved, out @ rot.T)


def test_internal_coordinate_generator_config_and_frame():
    topology, xyz = ala2_positions()
    gen = models.InternalCoordinateGenerator.alanine_dipeptide(xyz, topology, hidden=8,
                                                               n_layers=1)
    config = json.loads(json.dumps(gen.config))
    copy = build_model(config)
    copy.load_state_dict(gen.state_dict())
    z = torch.randn(3, 22, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(copy(z), gen(z))
    # without the random rotation, z = 0 gives the reference geometry (in the Z-matrix frame)
    fixed = models.InternalCoordinateGenerator.alanine_dipeptide(
        xyz, topology, hidden=8, n_layers=1, random_rotation=False).double()
    x = fixed(torch.zeros(1, 22, 3, dtype=torch.float64))[0]
    reference = torch.as_tensor(xyz) - torch.as_tensor(xyz).mean(0)
    assert torch.allclose(torch.cdist(x, x), torch.cdist(reference, reference), atol=1e-5)
    with pytest.raises(ValueError, match="frame_groups"):
        models.FrameMLPScore(22, [[0], [1]])
    with pytest.raises(ValueError, match="frame_groups"):
        models.FrameMLPScore(22, [[0], [1], [22]])


def test_atom_identity_features():
    topology, _ = ala2_positions()
    features = models.atom_identity_features(topology)
    assert features.shape == (22, 26)
    assert np.array_equal(features[:, 4:], np.eye(22))
    assert np.array_equal(features[:, :4], models.atom_type_features(topology))


@pytest.mark.parametrize("reflect", [False, True])
def test_pair_score_equivariant_torque_free_and_round_trips(reflect):
    _, xyz = ala2_positions()
    score = randomised(models.PairScore(22, 3, hidden=16, n_layers=2, reference=xyz), std=0.2)
    gen = torch.Generator().manual_seed(3)
    x = torch.as_tensor(xyz)[None] + 0.02 * torch.randn(4, 22, 3, generator=gen,
                                                        dtype=torch.float64)
    t = torch.rand(4, generator=gen, dtype=torch.float64)
    rot = orthogonal(3, seed=6, reflect=reflect)
    out = score(x, t)
    assert out.abs().max() > 1e-2
    assert close(score(x @ rot.T - 0.7, t), out @ rot.T)
    zero = torch.zeros(4, 3, dtype=torch.float64)
    assert torch.allclose(out.sum(1), zero, atol=1e-10)                        # no net force
    centred = x - x.mean(1, keepdim=True)
    assert torch.allclose(torch.cross(centred, out, dim=-1).sum(1), zero, atol=1e-10)  # no torque
    copy = build_model(json.loads(json.dumps(score.config))).double()
    copy.load_state_dict(score.state_dict())
    assert torch.equal(copy(x, t), out)
    # a fresh network starts at zero output
    fresh = models.PairScore(22, 3, hidden=8, n_layers=1)
    assert torch.equal(fresh(x.float(), t.float()), torch.zeros(4, 22, 3))
    with pytest.raises(ValueError, match="reference"):
        models.PairScore(22, 3, reference=np.zeros((21, 3)))
    with pytest.raises(ValueError, match="length_scale"):
        models.PairScore(22, 3, length_scale=0.0)
