"""Data shipped with openmm_dikl (installed as ``openmm_dikl._shipped``).

Holds no code: structures, force-field files, reference samples and trained
checkpoints.  Use :func:`openmm_dikl.systems.shipped_path` to locate a file.
"""
