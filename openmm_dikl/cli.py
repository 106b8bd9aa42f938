"""The ``openmm-dikl`` command line.

``systems`` lists the bundled targets; ``sample`` runs an OpenMM sampler on a bundled
target or on a user PDB with a force field; ``train`` trains a DiKL generator from a
recipe; ``generate`` draws one-shot samples from a trained generator; ``evaluate``
compares samples with the target's reference and writes plots.  Bad input ends with a
one-line error (exit status 2), never a traceback.
"""
import argparse
import logging
import os
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
    sample.add_argument("--method", default="digs",
                        help="sampler: langevin (OpenMM, 1 fs), digs (torsional DiGS for peptides, "
                             "Gaussian-kernel DiGS otherwise), digs-cartesian (the OpenMM "
                             "DiffusiveGibbsIntegrator), mala, hmc, pt (parallel tempering, 8 "
                             "replicas; frames of the lowest temperature) (default digs)")
    sample.add_argument("--force-evals", type=int, default=100000,
                        help="budget of force evaluations (default 1e5)")
    sample.add_argument("--frames", type=int, default=1000, help="frames to write (default 1000)")
    sample.add_argument("--chains", type=int, default=1,
                        help="independent chains of the torch methods (digs, mala, hmc), run as "
                             "one batch; frames are written in chain order at every report "
                             "(default 1)")
    sample.add_argument("--workers", type=int, default=None,
                        help="run the --chains chains as independent runs in W processes (any "
                             "method; each its own OpenMM Context or torch sampler; chain k "
                             "seeded with sampling.chain_seed(SEED, k), budget split evenly) and "
                             "merge them in chain order (default: torch methods batch the "
                             "chains in this process)")
    sample.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                        help="start the chains from one-shot samples of a trained DiKL generator "
                             "(bundled system name or sampler file; torch methods only)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--platform", default=None, help="OpenMM platform (default: the system's)")
    sample.add_argument("--out", default="samples.dcd", help="output trajectory .dcd (default samples.dcd)")
    sample.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    train = sub.add_parser(
        "train", help="train a DiKL generator (reverse diffusive KL) from a recipe",
        description="Train a one-shot generator for a bundled system by reverse diffusive KL "
                    "against the target's forces. Writes OUT/checkpoint.pt (atomic, periodic), "
                    "OUT/log.csv, OUT/eval.csv, OUT/sampler.pt and OUT/result.json (command, seed, "
                    "wall time in s, final metrics: W2 in nm, TVDs).")
    train.add_argument("system", help="bundled system name (dw4, lj13, mw32, mog40, ...)")
    train.add_argument("--config", help="recipe JSON (default: the bundled recipe of SYSTEM)")
    train.add_argument("--out", required=True, help="output folder")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--init-from", metavar="CHECKPOINT", default=None,
                       help="start a new run from the networks of another run's trainer "
                            "checkpoint (fine-tuning: optimiser settings and the posterior "
                            "sampler may differ; the architectures and the noise schedule "
                            "may not); not with --resume")
    train.add_argument("--iterations", type=int, default=None,
                       help="total iterations to reach (default: the recipe's)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--nproc", type=int, default=None,
                       help="data-parallel processes on this machine: relaunches the same "
                            "command under torchrun --standalone (gloo, CPU); batches in the "
                            "recipe are global (default 1)")

    generate = sub.add_parser(
        "generate", help="draw one-shot samples from a trained generator",
        description="Draw N samples (nm) from a trained DiKL generator: a bundled system name "
                    "(its shipped checkpoint) or a sampler/checkpoint file. Output format by "
                    "extension: .npy (array (N, n_particles, dim), nm), .pdb, .dcd (with a PDB "
                    "topology beside it), .h5.")
    generate.add_argument("source", help="bundled system name or checkpoint path")
    generate.add_argument("-n", "--n-samples", type=int, default=1000, help="number of samples")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    generate.add_argument("--out", required=True, help="output file (.npy, .pdb, .dcd, .h5)")
    generate.add_argument("--refine", type=int, default=0, metavar="STEPS",
                          help="polish every sample with STEPS exact MCMC steps on the true "
                               "target (default 0: raw generator samples)")
    generate.add_argument("--refine-method", default="mala", choices=["mala", "hmc", "digs"],
                          help="kernel for --refine (default mala; step sizes adapt during the "
                               "first half of the steps)")

    evaluate = sub.add_parser(
        "evaluate", help="compare samples with the target's reference; write plots",
        description="Compare samples (.npy in nm, or a trajectory readable by mdtraj) with the "
                    "reference of SYSTEM: W2 (nm), energy TVD and interatomic-distance TVD "
                    "(2,000 vs 2,000, 200 bins, repeats) beside the reference-vs-reference noise "
                    "floor; writes energy and distance histograms as PNG.")
    evaluate.add_argument("file", help="samples: .npy (N, n_particles, dim) nm, or .dcd/.h5/.pdb")
    evaluate.add_argument("--system", required=True, help="bundled system name")
    evaluate.add_argument("--top", help="topology PDB for .dcd input (default: FILE stem + .pdb)")
    evaluate.add_argument("--plots", default=None,
                          help="prefix of the PNG files (default: FILE stem)")
    evaluate.add_argument("--repeats", type=int, default=5, help="repeats of 2,000 vs 2,000")
    return parser


def _load_target(args):
    if args.pdb:
        if args.system:
            raise CLIError("give either a bundled system name or --pdb, not both")
        return _target_from_pdb(args.pdb, args.forcefield, args.temperature)
    return _bundled_system(args.system or DEFAULT_SYSTEM)


def _bundled_system(name):
    """The bundled target ``name``, or a CLIError listing the valid names."""
    from . import systems
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
    options = {"chains": args.chains} if args.chains != 1 else {}
    if args.workers is not None:
        if args.workers < 1:
            raise CLIError(f"--workers must be >= 1, got {args.workers}")
        options["workers"] = args.workers
    if ((args.chains != 1 and args.workers is None) or args.init_from) and \
            args.method not in ("digs", "mala", "hmc"):
        raise CLIError(f"--chains (without --workers) and --init-from apply to the torch methods "
                       f"digs, mala and hmc, not {args.method}")
    positions = None
    if args.init_from:
        from .dikl import load_sampler
        generator = load_sampler(args.init_from)
        if generator.target_name != target.name:
            raise CLIError(f"--init-from {args.init_from} is a generator for "
                           f"{generator.target_name!r}, not {target.name!r}")
        positions = generator.sample(args.chains, seed=args.seed).double().numpy()
    result = run_sampler(target, method=args.method, force_evals=args.force_evals, out=args.out,
                         seed=args.seed, n_frames=args.frames, platform=args.platform,
                         positions=positions, progress=not args.no_progress, **options)
    print(f"{args.method} on {target.name}: {result.n_steps} steps, "
          f"{result.force_evaluations} force evaluations, {result.n_frames} frames")
    for key, path in result.paths.items():
        print(f"  {key}: {path}")
    return 0


def _launch_torchrun(args):
    """Run this ``train`` command as ``args.nproc`` processes under torchrun."""
    import subprocess
    from .distributed import torchrun_command
    argv = ["-v"] if args.verbose else []
    argv += ["train", args.system, "--out", args.out]
    for flag, value in (("--config", args.config), ("--iterations", args.iterations),
                        ("--init-from", args.init_from)):
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--resume", args.resume), ("--no-progress", args.no_progress))
             if on]
    return subprocess.run(torchrun_command(args.nproc, argv)).returncode


def _cmd_train(args):
    from . import distributed
    from .recipes import load_recipe, train_from_recipe
    _bundled_system(args.system)
    if args.iterations is not None and args.iterations < 1:
        raise CLIError(f"--iterations must be positive, got {args.iterations}")
    if args.nproc is not None and args.nproc < 1:
        raise CLIError(f"--nproc must be >= 1, got {args.nproc}")
    if args.resume and args.init_from is not None:
        raise CLIError("--resume and --init-from exclude each other: a resumed run takes its "
                       "networks from OUT/checkpoint.pt")
    recipe = load_recipe(args.system, args.config)
    _check_folder_writable(args.out)
    from .dikl import _load_file
    if args.resume:  # a missing or damaged checkpoint fails before anything is written
        _load_file(os.path.join(args.out, "checkpoint.pt"), kinds=("trainer",))
    elif args.init_from is not None:
        _load_file(args.init_from, kinds=("trainer",))
    if (args.nproc or 1) > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args)
    parallel = distributed.init_from_env()  # under torchrun: join the process group
    try:
        if parallel and not distributed.is_main():  # ranks > 0 train and write nothing
            from .dikl import DiKLTrainer
            trainer = DiKLTrainer.from_recipe(recipe)
            try:
                trainer.train(n_iterations=args.iterations, out_dir=args.out,
                              resume=args.resume, progress=False, init_from=args.init_from)
            finally:
                trainer.close()
            return 0
        result = train_from_recipe(args.system, recipe, args.out, resume=args.resume,
                                   progress=not args.no_progress, n_iterations=args.iterations,
                                   init_from=args.init_from,
                                   command=["openmm-dikl"] + args.argv)
    finally:
        distributed.cleanup()
    print(f"trained {args.system}: {result['iterations']} iterations, "
          f"{result['wall_time_s'] / 60:.1f} min")
    for key, value in result["metrics"].items():
        print(f"  {key}: {value:.4g}")
    print(f"  sampler: {os.path.join(args.out, 'sampler.pt')}")
    return 0


def _check_folder_writable(path):
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CLIError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise CLIError(f"output location {path} is not writable")


def _cmd_generate(args):
    from .io import write_samples
    from .dikl import load_sampler
    if args.n_samples < 1:
        raise CLIError("-n must be positive")
    _check_folder_writable(args.out)
    sampler = load_sampler(args.source)
    if args.refine < 0:
        raise CLIError("--refine must be >= 0")
    x = sampler.sample(args.n_samples, seed=args.seed)
    from . import systems
    target = systems.get(sampler.target_name)
    if args.refine:
        from .refine import refine_samples
        refined = refine_samples(target, x, args.refine, method=args.refine_method,
                                 seed=args.seed, progress=True)
        x = refined.samples
        print(f"refined with {args.refine} {args.refine_method} steps: "
              f"{refined.force_evaluations} force evaluations, acceptance {refined.acceptance:.2f}")
    paths = write_samples(target, x.double().numpy(), args.out)
    print(f"{args.n_samples} samples of {sampler.target_name} -> {', '.join(paths)}")
    return 0


def _cmd_evaluate(args):
    from .evaluation import evaluate_file
    target = _bundled_system(args.system)
    prefix = args.plots or os.path.splitext(args.file)[0]
    table, plots = evaluate_file(target, args.file, top=args.top, prefix=prefix,
                                 n_repeats=args.repeats)
    print(table)
    for path in plots:
        print(f"  plot: {path}")
    return 0


COMMANDS = {"systems": _cmd_systems, "sample": _cmd_sample, "train": _cmd_train,
            "generate": _cmd_generate, "evaluate": _cmd_evaluate}


def main(argv=None):
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded as the command in result files
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
