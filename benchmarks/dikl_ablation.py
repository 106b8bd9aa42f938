"""What each DiKL setting buys at a fixed budget: an ablation table for one system.

Starting from a base recipe (default: the bundled one of SYSTEM), trains one run per
variant for the same number of iterations and prints the system's metrics (protocol of
``docs/methods.md``, 10,000 samples, no floors) with the CPU time and the force
evaluations each run spent.  A variant is the base with some flat DiKL settings changed;
by default the options after the authors' reference code (``DiKLConfig`` module
docstring), each on its own and all together.  Every run is an ``openmm-dikl train``
folder under ``--out``, so an interrupted ablation resumes where it stopped (finished
variants are read back, not retrained).

    python benchmarks/dikl_ablation.py mog40 --iterations 500 --out runs/ablation_mog40
    python benchmarks/dikl_ablation.py mw32 --variant "fresh=score_samples_per_iter:null" \\
        --variant "steps50=score_steps_per_iter:50" --iterations 300

Each ``--variant NAME=key:value[,key:value...]`` takes JSON values (``null``, numbers,
``"inv_alpha"``); a key ``generator.NAME`` or ``score_model.NAME`` changes that network's
architecture instead of a DiKL setting (``generator.output:"displacement"``).
"""
import argparse
import csv
import json
import os

import torch

from openmm_dikl.dikl.recipes import load_recipe, train_from_recipe

#: The reference-code options of the DiKL issue, as flat settings of the recipe's "dikl".
DEFAULT_VARIANTS = {
    "base": {},
    "1/alpha weighting": {"generator_weighting": "inv_alpha"},
    "levels 1..T-1": {"min_level": 1},
    "fresh score samples": {"score_samples_per_iter": None},
    "iterate averaging": {"average_last": None},  # None: half of the MALA steps
    "all": {"generator_weighting": "inv_alpha", "min_level": 1,
            "score_samples_per_iter": None, "average_last": None},
}


#: Recipe sections whose entries a variant may change with ``SECTION.NAME`` keys.
NETWORK_SECTIONS = ("generator", "score_model")


def parse_variant(text):
    """``NAME=key:value,...`` -> (name, {key: value}) with JSON values."""
    name, _, settings = text.partition("=")
    if not name or not settings:
        raise argparse.ArgumentTypeError(f"variant {text!r} is not NAME=key:value[,...]")
    changes = {}
    for item in settings.split(","):
        key, _, value = item.partition(":")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"variant {name}: {value!r} is not JSON") from err
    return name, changes


def variant_recipe(base, changes, n_iterations):
    """The base recipe with flat DiKL ``changes`` (average_last None: half the MALA steps)."""
    recipe = json.loads(json.dumps(base))
    dikl = recipe["dikl"]
    for key, value in changes.items():
        section, dot, name = key.partition(".")
        if dot:
            if section not in NETWORK_SECTIONS:
                raise ValueError(f"variant key {key!r}: only {NETWORK_SECTIONS} take "
                                 f"'SECTION.NAME' keys")
            recipe[section][name] = value
            continue
        if key == "average_last" and value is None:
            value = max(1, int(dikl.get("n_mala_steps", 50)) // 2)
        dikl[key] = value
    dikl["n_iterations"] = int(n_iterations)
    return recipe


def run_variant(system, name, recipe, folder):
    """result.json of the variant's run (trained, resumed or read back)."""
    result_path = os.path.join(folder, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as handle:
            result = json.load(handle)
        if result.get("iterations") == recipe["dikl"]["n_iterations"]:
            return result
    resume = os.path.exists(os.path.join(folder, "checkpoint.pt"))
    return train_from_recipe(system, recipe, folder, resume=resume, progress=False,
                             command=["benchmarks/dikl_ablation.py", system, name])


def force_evaluations(folder):
    """Force evaluations the run spent (sum of its log.csv)."""
    with open(os.path.join(folder, "log.csv"), newline="") as handle:
        return sum(int(row["energy_evaluations"]) for row in csv.DictReader(handle))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system")
    parser.add_argument("--config", help="base recipe JSON (default: the bundled one)")
    parser.add_argument("--iterations", type=int, default=500, help="budget of every run")
    parser.add_argument("--variant", type=parse_variant, action="append",
                        help="NAME=key:value,... (default: the reference-code options)")
    parser.add_argument("--out", default=None, help="folder of the runs "
                                                    "(default runs/ablation_SYSTEM)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = load_recipe(args.system, args.config)
    variants = dict(args.variant) if args.variant else DEFAULT_VARIANTS
    out = args.out or os.path.join("runs", f"ablation_{args.system}")
    rows = []
    for name, changes in variants.items():
        folder = os.path.join(out, name.replace("/", "_").replace(" ", "_"))
        result = run_variant(args.system, name,
                             variant_recipe(base, changes, args.iterations), folder)
        rows.append((name, result, force_evaluations(folder)))
        print(f"finished {name}: {result['cpu_time_s']:.0f} CPU s", flush=True)
    keys = sorted({k for _, result, _ in rows for k in result["metrics"]
                   if not k.endswith("_std") and not k.startswith("reference_")})
    print(f"\n{args.system}, {args.iterations} iterations per run")
    print("| variant | CPU s | force evaluations | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for name, result, evaluations in rows:
        cells = " | ".join(f"{result['metrics'][k]:.4g}" if k in result["metrics"] else "—"
                           for k in keys)
        print(f"| {name} | {result['cpu_time_s']:.0f} | {evaluations:.3g} | {cells} |")


if __name__ == "__main__":
    main()
