"""The ``openmm-dikl`` command line.

``systems`` lists the bundled targets; ``sample`` runs an OpenMM sampler on a bundled
target or on a user PDB with a force field; ``train`` trains a DiKL generator from a
recipe; ``generate`` draws one-shot samples from a trained generator; ``evaluate``
compares samples with the target's reference and writes plots.  Bad input ends with a
one-line error (exit status 2) and Ctrl-C with a one-line note (exit status 130), with the
files written so far consistent; ``--debug`` shows the traceback instead.  Heavy modules
are imported by the subcommands, so ``--help`` answers quickly.
"""
import argparse
import logging
import os
import sys

import numpy as np

__all__ = ["build_parser", "main", "entry_point"]

DEFAULT_SYSTEM = "alanine_dipeptide_implicit"
#: ``--method`` choices (the same list as :data:`openmm_dikl.samplers.METHODS`; kept here so
#: that ``--help`` needs no heavy import; a test checks that they agree).
SAMPLE_METHODS = ("digs", "digs-cartesian", "digs-torsional", "hmc", "langevin", "mala", "pt")
TORCH_METHODS = ("digs", "hmc", "mala")


class CLIError(Exception):
    """A user error reported as one line."""


def build_parser():
    """The argparse parser of ``openmm-dikl``."""
    parser = argparse.ArgumentParser(
        prog="openmm-dikl",
        description="Diffusive Gibbs sampling and DiKL neural samplers for OpenMM. "
                    "Units: nm, kJ/mol, K; reduced energies in kT.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress details and show tracebacks of errors")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("systems", help="list the bundled target systems")
    _add_sample_parser(sub)
    _add_train_parser(sub)
    _add_generate_parser(sub)
    _add_evaluate_parser(sub)
    return parser


def _add_sample_parser(sub):
    sample = sub.add_parser(
        "sample", help="sample a target (DiGS, MD, MALA/HMC, PT); writes DCD + PDB + CSV",
        description="Sample a bundled target (or a user PDB with --pdb/--forcefield) with DiGS "
                    "(torch, energies from OpenMM), an OpenMM integrator, MALA/HMC or parallel "
                    "tempering, budgeted in force evaluations. Writes the trajectory "
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
    sample.add_argument("--constraints", default="none", choices=("none", "hbonds"),
                        help="constraints of the --pdb System: none, or hbonds (bonds to "
                             "hydrogen fixed; sampled by digs and langevin, refused by the "
                             "torch methods and pt) (default none)")
    sample.add_argument("--method", default="digs", choices=SAMPLE_METHODS,
                        help="sampler: digs (torsional DiGS on the backbone phi/psi for peptides: "
                             "in OpenMM for --pdb systems and longer peptides, in torch for "
                             "alanine dipeptide; Gaussian-kernel DiGS for particle systems), "
                             "digs-torsional (the OpenMM torsional move on any molecule), "
                             "digs-cartesian (the "
                             "OpenMM DiffusiveGibbsIntegrator), langevin (OpenMM, 1 fs), mala, "
                             "hmc, pt (parallel tempering, 8 replicas; frames of the lowest "
                             "temperature) (default digs)")
    sample.add_argument("--force-evals", type=int, default=100000,
                        help="budget of force evaluations, all chains together (default 1e5)")
    sample.add_argument("--frames", type=int, default=1000,
                        help="frames to write in total: one per chain at each of ceil(FRAMES / "
                             "CHAINS) reports evenly spaced after burn-in (the last may write "
                             "fewer chains); fewer, with a warning, when the budget has fewer "
                             "steps (default 1000)")
    sample.add_argument("--chains", type=int, default=None,
                        help="independent chains of the torch methods (digs, mala, hmc), run as "
                             "one batch; frames are written in chain order at every report "
                             "(default: the system's, 32 for molecules, else 1)")
    sample.add_argument("--workers", type=int, default=None,
                        help="run the --chains chains as independent runs in W processes (any "
                             "method; each its own OpenMM Context or torch sampler; chain k "
                             "seeded with samplers.chain_seed(SEED, k), budget split evenly) and "
                             "merge them in chain order (default: torch methods batch the "
                             "chains in this process)")
    sample.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                        help="start the chains from one-shot samples of a trained DiKL generator "
                             "(bundled system name or sampler file; torch methods only)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--platform", default=None, help="OpenMM platform (default: the system's)")
    sample.add_argument("--out", default="samples.dcd",
                        help="output trajectory .dcd; STEM.pdb (topology) and STEM.csv (log) go "
                             "beside it (default samples.dcd)")
    sample.add_argument("--overwrite", action="store_true",
                        help="replace an existing STEM.pdb / STEM.csv beside --out")
    sample.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_train_parser(sub):
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
                            "may not), or from the generator of a sampler checkpoint (the "
                            "score network starts fresh: set score_warmup_steps); not with "
                            "--resume")
    train.add_argument("--iterations", type=int, default=None,
                       help="total iterations to reach (default: the recipe's)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--nproc", type=int, default=None,
                       help="data-parallel processes on this machine: relaunches the same "
                            "command under torchrun --standalone (gloo, CPU); batches in the "
                            "recipe are global (default 1)")


def _add_generate_parser(sub):
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
    generate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    generate.add_argument("--overwrite", action="store_true",
                          help="replace an existing STEM.pdb written beside a .dcd --out")
    generate.add_argument("--refine", type=int, default=0, metavar="STEPS",
                          help="polish every sample with STEPS exact MCMC steps on the true "
                               "target (default 0: raw generator samples)")
    generate.add_argument("--refine-method", choices=["mala", "hmc", "digs"],
                          help="kernel for --refine (default: the system's, digs with the "
                               "torsional kernel for alanine dipeptide, mala otherwise; step "
                               "sizes adapt during the first half of the steps)")


def _add_evaluate_parser(sub):
    evaluate = sub.add_parser(
        "evaluate", help="compare samples with the target's reference; write plots",
        description="Compare samples (.npy in nm, or a trajectory readable by mdtraj) with the "
                    "reference of SYSTEM by its registered protocol: W2 (nm), energy and "
                    "interatomic-distance TVD (2,000 vs 2,000, 200 bins, repeats; smaller files "
                    "scale down with a warning) for reference sets, mode and basin metrics for "
                    "MoG-40 / MW-32, KL of phi, psi and Ramachandran (nats) for peptides; "
                    "noise floors and reference values beside each; writes PNG plots.")
    evaluate.add_argument("file", help="samples: .npy (N, n_particles, dim) nm, or .dcd/.h5/.pdb")
    evaluate.add_argument("--system", required=True, help="bundled system name")
    evaluate.add_argument("--top", help="topology PDB for .dcd input (default: FILE stem + .pdb)")
    evaluate.add_argument("--plots", default=None,
                          help="prefix of the PNG files (default: FILE stem)")
    evaluate.add_argument("--repeats", type=int, default=5,
                          help="repeats of 2,000 vs 2,000 (or of the sizes a smaller file allows)")


def _load_target(args):
    if args.pdb:
        if args.system:
            raise CLIError("give either a bundled system name or --pdb, not both")
        return _target_from_pdb(args.pdb, args.forcefield, args.temperature, args.constraints)
    if getattr(args, "constraints", "none") != "none":
        raise CLIError("--constraints applies to --pdb systems; bundled systems define their own")
    return _bundled_system(args.system or DEFAULT_SYSTEM)


def _bundled_system(name):
    """The bundled target ``name``, or a CLIError listing the valid names."""
    from . import systems
    if name not in systems.names():
        raise CLIError(f"unknown system {name!r}; bundled systems are: {', '.join(systems.names())}")
    return systems.get(name)


def _target_from_pdb(path, forcefields, temperature, constraints="none"):
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
        system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                         constraints=app.HBonds if constraints == "hbonds" else None)
    except ValueError as err:
        raise CLIError(f"force field does not match {path}: {err}") from err
    # CPU: OpenMM force fields with implicit solvent (CustomGBForce) are ~5x slower on Reference
    return systems.from_openmm(system, pdb.topology, pdb.positions, temperature, name=path,
                               platform="CPU")


def _cmd_systems(args):
    from . import systems
    for name in systems.names():
        print(name)
    return 0


def _refuse_clobber(out, companions, overwrite):
    """CLIError if a file written beside ``out`` (not named by the user) exists already."""
    stem = os.path.splitext(out)[0]
    existing = [stem + ext for ext in companions if os.path.exists(stem + ext)]
    if existing and not overwrite:
        raise CLIError(f"{', '.join(existing)} exists and would be overwritten by the file "
                       f"written beside {out}; remove it, choose another --out, or pass "
                       "--overwrite")


def _sample_options(args, target):
    options = {} if args.chains is None else {"chains": args.chains}
    if args.workers is not None:
        if args.workers < 1:
            raise CLIError(f"--workers must be >= 1, got {args.workers}")
        options["workers"] = args.workers
    if args.chains is not None and args.chains < 1:
        raise CLIError(f"--chains must be >= 1, got {args.chains}")
    batched = args.chains not in (None, 1) and args.workers is None
    if (batched or args.init_from) and args.method not in TORCH_METHODS:
        raise CLIError(f"--chains (without --workers) and --init-from apply to the torch methods "
                       f"{', '.join(TORCH_METHODS)}, not {args.method}")
    return options


def _init_positions(args, target, n_chains):
    """Chain starts drawn from a trained generator (``--init-from``), or None."""
    if not args.init_from:
        return None
    from .dikl import load_sampler
    generator = load_sampler(args.init_from)
    if generator.target_name != target.name:
        raise CLIError(f"--init-from {args.init_from} is a generator for "
                       f"{generator.target_name!r}, not {target.name!r}")
    return generator.sample(n_chains, seed=args.seed).double().numpy()


def _cmd_sample(args):
    from .samplers import run_sampler
    target = _load_target(args)
    options = _sample_options(args, target)
    _refuse_clobber(args.out, (".pdb", ".csv"), args.overwrite)
    n_chains = options.get("chains", target.sampler_options(args.method).get("chains", 1))
    positions = _init_positions(args, target, n_chains)
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
    from .dikl.distributed import torchrun_command
    argv = ["-v"] if args.verbose else []
    argv += ["train", args.system, "--out", args.out]
    for flag, value in (("--config", args.config), ("--iterations", args.iterations),
                        ("--init-from", args.init_from)):
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--resume", args.resume), ("--no-progress", args.no_progress))
             if on]
    return subprocess.run(torchrun_command(args.nproc, argv)).returncode


def _check_train_args(args):
    _bundled_system(args.system)
    if args.iterations is not None and args.iterations < 1:
        raise CLIError(f"--iterations must be positive, got {args.iterations}")
    if args.nproc is not None and args.nproc < 1:
        raise CLIError(f"--nproc must be >= 1, got {args.nproc}")
    if args.resume and args.init_from is not None:
        raise CLIError("--resume and --init-from exclude each other: a resumed run takes its "
                       "networks from OUT/checkpoint.pt")
    _check_folder_writable(args.out)


def _cmd_train(args):
    from .dikl import distributed
    from .dikl.checkpoints import check_checkpoint
    from .dikl.recipes import load_recipe, train_from_recipe
    _check_train_args(args)
    recipe = load_recipe(args.system, args.config)
    if args.resume:  # a missing or damaged checkpoint fails before anything is written
        check_checkpoint(os.path.join(args.out, "checkpoint.pt"), kinds=("trainer",))
    elif args.init_from is not None:
        check_checkpoint(args.init_from, kinds=("trainer", "sampler"))
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
    from . import systems
    from .dikl import load_sampler
    from .io import write_samples
    from .samplers import refine_samples
    if args.n_samples < 1:
        raise CLIError("-n must be positive")
    if args.refine < 0:
        raise CLIError("--refine must be >= 0")
    _check_folder_writable(args.out)
    if args.out.endswith(".dcd"):
        _refuse_clobber(args.out, (".pdb",), args.overwrite)
    sampler = load_sampler(args.source)
    x = sampler.sample(args.n_samples, seed=args.seed)
    target = systems.get(sampler.target_name)
    if args.refine:
        method = args.refine_method or target.sampler_options("refine").get("method", "mala")
        refined = refine_samples(target, x, args.refine, method=method,
                                 seed=args.seed, progress=not args.no_progress)
        x = refined.final_positions
        rates = ", ".join(f"{key} {float(np.nanmean(value)):.2f}"
                          for key, value in refined.acceptance.items())
        print(f"refined with {args.refine} {method} steps: "
              f"{refined.force_evaluations} force evaluations, acceptance {rates}")
    paths = write_samples(target, x.double().numpy(), args.out)
    print(f"{args.n_samples} samples of {sampler.target_name} -> {', '.join(paths)}")
    return 0


def _run_description(path):
    """"<method>, <budget> force evaluations (<file>)" from the CSV log beside a trajectory."""
    import csv
    log = os.path.splitext(path)[0] + ".csv"
    try:
        with open(log, newline="") as handle:
            rows = list(csv.DictReader(handle))
        return (f"{rows[0]['method']}, {int(rows[-1]['force_evaluations']):.3g} force "
                f"evaluations ({os.path.basename(path)})")
    except (OSError, KeyError, IndexError, ValueError):  # no log, or not one of ours
        return os.path.basename(path)


def _cmd_evaluate(args):
    from openmm import unit

    from .analysis import evaluate_file
    target = _bundled_system(args.system)
    prefix = args.plots or os.path.splitext(args.file)[0]
    title = (f"{target.name}, {target.temperature.value_in_unit(unit.kelvin):g} K: "
             f"{_run_description(args.file)}")
    table, plots = evaluate_file(target, args.file, top=args.top, prefix=prefix,
                                 n_repeats=args.repeats, title=title)
    print(table)
    for path in plots:
        print(f"  plot: {path}")
    return 0


COMMANDS = {"systems": _cmd_systems, "sample": _cmd_sample, "train": _cmd_train,
            "generate": _cmd_generate, "evaluate": _cmd_evaluate}

#: Errors that mean bad input (one line, exit status 2) rather than a bug (traceback).
_USER_ERRORS = (CLIError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
                NotImplementedError)


def _is_user_error(err):
    from .samplers import SamplingError  # already imported when it was raised
    return isinstance(err, _USER_ERRORS + (SamplingError,))


def _quiet_third_party_logs():
    """pymbar (imported by openmmtools) logs a banner at WARNING on import: keep it at ERROR
    unless -v or the user configured that logger."""
    pymbar = logging.getLogger("pymbar")
    if pymbar.level == logging.NOTSET:
        pymbar.setLevel(logging.ERROR)


def main(argv=None):
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded as the command in result files
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_third_party_logs()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"openmm-dikl {args.command}: interrupted; files written so far are complete "
              "up to the last frame or checkpoint", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug or args.verbose or not _is_user_error(err):
            raise
        print(f"openmm-dikl {args.command}: error: {err}", file=sys.stderr)
        return 2


def entry_point():
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
