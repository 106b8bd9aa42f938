"""PLACEHOLDER single-process bridge (to be replaced by the full implementation)."""
import numpy as np
import openmm
import torch
from openmm import unit

from .units import as_kelvin, check_positions, kt_kjmol


class _Energy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bridge):
        u, f = bridge.compute(x.detach())
        ctx.save_for_backward(f)
        return u

    @staticmethod
    def backward(ctx, grad):
        (f,) = ctx.saved_tensors
        return -grad[:, None, None] * f, None


class OpenMMBridge:
    def __init__(self, system, temperature, platform="Reference", n_workers=1):
        self.system = system
        self.n_particles = system.getNumParticles()
        self.kt = kt_kjmol(temperature)
        self._context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                       openmm.Platform.getPlatformByName(platform))

    def compute(self, x):
        d = x.shape[-1]
        x = check_positions(x, self.n_particles, d)
        u = np.empty(len(x)); f = np.empty(x.shape)
        for b, conf in enumerate(x):
            if d == 2:
                conf = np.concatenate([conf, np.zeros((len(conf), 1))], 1)
            self._context.setPositions(conf)
            s = self._context.getState(getEnergy=True, getForces=True)
            u[b] = s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / self.kt
            f[b] = s.getForces(asNumpy=True)._value[:, :d] / self.kt
        return torch.as_tensor(u), torch.as_tensor(f)

    def reduced_energy(self, x):
        return _Energy.apply(x, self)

    def close(self):
        self._context = None
