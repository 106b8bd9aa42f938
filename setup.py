"""Packaging for openmm_dikl.

Install torch first (``pip install torch==2.13.0`` takes the CPU build), then
``pip install .`` (or ``pip install ".[test]"``).  The top-level ``systems/`` folder
(shipped structures, reference samples, checkpoints) is installed as the package
``openmm_dikl._shipped`` so that a regular, non-editable install finds it.
"""
from setuptools import find_packages, setup

SHIPPED_PATTERNS = ["*.pdb", "*.prmtop", "*.crd", "*.json", "*.npy", "*.npz",
                    "*.txt", "*.md", "checkpoints/*", "configs/*"]

setup(
    name="openmm-dikl",
    version="0.1.0",
    description=("Diffusive Gibbs sampling and reverse diffusive KL neural samplers "
                 "for OpenMM"),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["openmm_dikl", "openmm_dikl.*"]) + ["openmm_dikl._shipped"],
    package_dir={"openmm_dikl._shipped": "systems"},
    package_data={"openmm_dikl._shipped": SHIPPED_PATTERNS},
    include_package_data=False,
    install_requires=[
        "numpy",
        "scipy",
        "torch>=2.0",
        "openmm>=8.1",
        "openmmtools",
        "mdtraj",
        "torchani==2.2.4",
        "setuptools<81",
        "tqdm",
        "matplotlib",
        "tables",  # mdtraj HDF5 (.h5) trajectories
    ],
    extras_require={"test": ["pytest", "pytest-timeout"]},
    entry_points={"console_scripts": ["openmm-dikl=openmm_dikl.cli:entry_point"]},
)
