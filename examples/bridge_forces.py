"""Batched energies and forces of alanine dipeptide through the OpenMM -> torch bridge.

Perturbs the shipped structure into a batch, evaluates reduced energies (kT) and forces
(kT/nm) with one and with two worker processes, checks that they agree, and uses the
differentiable energy in a few steps of torch gradient descent.

    python examples/bridge_forces.py [--batch 256] [--workers 2]
"""
import argparse
import time

import torch
from openmm import unit

from openmm_dikl import OpenMMBridge, systems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="alanine_dipeptide_implicit")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    target = systems.get(args.system)
    start = torch.as_tensor(target.positions.value_in_unit(unit.nanometer))
    gen = torch.Generator().manual_seed(0)
    x = start + 0.01 * torch.randn((args.batch,) + tuple(start.shape), generator=gen, dtype=torch.float64)

    results = {}
    for n_workers in sorted({1, args.workers}):
        with OpenMMBridge(target.system, target.temperature, platform=target.platform,
                          n_workers=n_workers) as bridge:
            bridge.compute(x[:2])  # warm-up (workers start lazily)
            t0 = time.perf_counter()
            results[n_workers] = bridge.compute(x)
            elapsed = time.perf_counter() - t0
        print(f"{n_workers} worker(s): {args.batch} configurations in {elapsed * 1e3:.1f} ms "
              f"({elapsed / args.batch * 1e6:.0f} µs each)")
    u1, f1 = results[1]
    uw, fw = results[args.workers]
    print(f"mean reduced energy {float(u1.mean()):.3f} kT; workers agree: "
          f"{bool(torch.equal(u1, uw) and torch.equal(f1, fw))}")

    # the energy is differentiable: relax the batch by gradient descent on u (kT)
    with OpenMMBridge(target.system, target.temperature, platform=target.platform) as bridge:
        y = x.clone().requires_grad_(True)
        optimiser = torch.optim.SGD([y], lr=2e-6)  # nm² per kT: below 2 / (stiffest bond)
        for _ in range(20):
            optimiser.zero_grad()
            energy = bridge.reduced_energy(y).sum()
            energy.backward()
            optimiser.step()
        print(f"after 20 gradient steps: mean reduced energy {float(bridge.compute(y.detach())[0].mean()):.3f} kT")


if __name__ == "__main__":
    main()
