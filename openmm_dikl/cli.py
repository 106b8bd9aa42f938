"""The ``openmm-dikl`` command line.

``openmm-dikl systems`` lists the bundled targets; ``openmm-dikl sample`` runs an OpenMM
sampler on a bundled target or on a user PDB with a force field.  Bad input ends with a
one-line error (exit status 2), never a traceback.
"""
import argparse
import logging
import sys

__all__ = ["build_parser", "main", "entry_point"]

DEFAULT_SYSTEM = "alanine_dipeptide_implicit"


class CLIError(Exception):
    """A user error reported as one line."""


def build_parser():
    """The argparse parser of ``openmm-dikl``."""
    parser = argparse.ArgumentParser(
        prog="openmm-dikl",
        description="Diffusive Gibbs sampling and DiKL neural samplers for OpenMM. "
                    "Units: nm, kJ/mol, K; reduced energies in kT.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("systems", help="list the bundled target systems")

    sample = sub.add_parser(
        "sample", help="sample a target with an OpenMM integrator; writes DCD + PDB + CSV",
        description="Sample a bundled target (or a user PDB with --pdb/--forcefield) with an "
                    "OpenMM integrator, budgeted in force evaluations. Writes the trajectory "
                    "(DCD, nm), a PDB topology beside it and a CSV log (energies in kJ/mol and kT, "
                    "acceptance rates).")
    sample.add_argument("system", nargs="?", default=None,
                        help=f"bundled system name (default {DEFAULT_SYSTEM}; see `openmm-dikl systems`)")
    sample.add_argument("--pdb", help="user PDB file (positions in Å as the PDB format has them)")
    sample.add_argument("--forcefield", nargs="+", default=None,
                        help="OpenMM force-field XML files for --pdb (e.g. amber14-all.xml "
                             "implicit/obc2.xml)")
    sample.add_argument("--temperature", type=float, default=300.0,
                        help="temperature in K for --pdb systems (default 300)")
    sample.add_argument("--method", default="langevin", help="sampler: langevin or digs")
    sample.add_argument("--force-evals", type=int, default=100000,
                        help="budget of force evaluations (default 1e5)")
    sample.add_argument("--frames", type=int, default=1000, help="frames to write (default 1000)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--platform", default=None, help="OpenMM platform (default: the system's)")
    sample.add_argument("--out", default="samples.dcd", help="output trajectory .dcd (default samples.dcd)")
    sample.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _load_target(args):
    from . import systems
    if args.pdb:
        if args.system:
            raise CLIError("give either a bundled system name or --pdb, not both")
        return _target_from_pdb(args.pdb, args.forcefield, args.temperature)
    name = args.system or DEFAULT_SYSTEM
    if name not in systems.names():
        raise CLIError(f"unknown system {name!r}; bundled systems are: {', '.join(systems.names())}")
    return systems.get(name)


def _target_from_pdb(path, forcefields, temperature):
    from openmm import app
    from . import systems
    if not forcefields:
        raise CLIError("--pdb needs --forcefield (e.g. --forcefield amber14-all.xml)")
    try:
        pdb = app.PDBFile(path)
    except Exception as err:  # OpenMM raises several types for unreadable files
        raise CLIError(f"cannot read PDB file {path}: {err}") from err
    try:
        forcefield = app.ForceField(*forcefields)
    except Exception as err:
        raise CLIError(f"cannot load force field {' '.join(forcefields)}: {err}") from err
    try:
        system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    except ValueError as err:
        raise CLIError(f"force field does not match {path}: {err}") from err
    return systems.from_openmm(system, pdb.topology, pdb.positions, temperature, name=path)


def _cmd_systems(args):
    from . import systems
    for name in systems.names():
        print(name)
    return 0


def _cmd_sample(args):
    from .sampling import run_sampler
    target = _load_target(args)
    result = run_sampler(target, method=args.method, force_evals=args.force_evals, out=args.out,
                         seed=args.seed, n_frames=args.frames, platform=args.platform,
                         progress=not args.no_progress)
    print(f"{args.method} on {target.name}: {result.n_steps} steps, "
          f"{result.force_evaluations} force evaluations, {result.n_frames} frames")
    for key, path in result.paths.items():
        print(f"  {key}: {path}")
    return 0


COMMANDS = {"systems": _cmd_systems, "sample": _cmd_sample}


def main(argv=None):
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (CLIError, ValueError, KeyError, FileNotFoundError, NotImplementedError,
            PermissionError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"openmm-dikl {args.command}: error: {message}", file=sys.stderr)
        return 2


def entry_point():
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
