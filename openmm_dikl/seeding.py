"""Seeds of the parts of a parallel run (chains in processes, DDP ranks)."""

__all__ = ["derived_seed"]


def derived_seed(seed, index):
    """Seed of part ``index`` of a run seeded with ``seed`` (``seed`` itself for part 0).

    The other parts get a well-mixed value in [0, 2^31 − 2) so that the parts of runs
    with neighbouring seeds do not coincide.

    Raises
    ------
    ValueError
        If ``index`` is negative.
    """
    if int(index) < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    if int(index) == 0:
        return int(seed)
    return (int(seed) + 0x9E3779B97F4A7C15 * int(index)) % (2**31 - 2)
