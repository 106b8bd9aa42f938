"""Settings of a DiKL run: :class:`DiKLConfig`, made of four validated sections.

=================  ==================================================================
section            what it holds
=================  ==================================================================
``schedule``       what a trained score network computes: the VP noise schedule, the
                   network's parameterisation, the coordinate scale and centring
                   (:class:`ScheduleConfig`)
``posterior``      the posterior sampler behind the target score (:class:`PosteriorConfig`)
``optimisation``   batches, learning rates, loss weightings, clipping, weight average
                   (:class:`OptimisationConfig`)
``run``            how long to train, how often to checkpoint and evaluate, the force
                   source (:class:`RunConfig`)
``seed``           the seed of all randomness of a run (top-level field)
=================  ==================================================================

The rules for continuing from a checkpoint follow from the sections:

* resuming a run (``DiKLTrainer.train(resume=True)``) requires every setting except the
  ``run`` section to be equal (:meth:`DiKLConfig.resume_differences`);
* starting a new run from another run's networks (``DiKLTrainer.load_weights``,
  ``init_from``) requires the ``schedule`` section to be equal, and the network
  architectures; posterior, optimisation, run and seed may change
  (:meth:`DiKLConfig.fine_tune_differences`).

Every section is a frozen dataclass validated on construction; an invalid value raises
``ValueError`` naming the field (``schedule.beta_min``, ...).  Recipes
(``systems/configs/*.json``) and checkpoints written before the sections existed store
the settings as one flat dict: :meth:`DiKLConfig.from_dict` reads both layouts, and a
missing setting gets its default (the settings added later, ``coordinate_scale``,
``score_clip`` and the options of the authors' reference code listed below, default to
the behaviour from before they existed).

Options that follow the DiKL reference implementation (github.com/jiajunhe98/DiKL), all
off by default:

* ``optimisation.generator_weighting = "inv_alpha"``: w(t) = 1/α_t, every level counts
  equally in the generator gradient (its "1/a");
* ``optimisation.min_level = 1``: never train on the least noisy level 0 (its t is
  drawn from 1 … T−1);
* ``optimisation.score_samples_per_iter = None``: fresh generator samples for every
  score step (the default here too; the shipped recipes pool them);
* ``posterior.average_last = K``: the target score from the average over the last K
  MALA iterates (its LJ-13 posterior: the last 500 of 1000);
* ``run.select_checkpoint``: keep the best weight average as ``best_sampler.pt`` by a
  rule that needs no validation data (``"mala_energy_tvd"`` for DW-4,
  ``"mean_energy"`` for LJ-13).

The network options (``MLPScore(time_every_layer=True)``, ``EGNNGenerator(output=
"displacement", norm_constant=1.0, attention=True)``, ``aggregation="sum"``, ``tanh``
with ``coords_range`` = 15 / n_layers) are architecture settings of
:mod:`openmm_dikl.nn`.

Units: lengths in nm, MALA step sizes in nm² (at unit posterior width), everything
else dimensionless.  See He et al., "Training neural samplers with reverse diffusive KL
divergence" (AISTATS 2025) for the meaning of the settings.

Examples
--------
>>> config = DiKLConfig.from_dict({"n_levels": 20, "batch_size": 256, "seed": 3})
>>> config.schedule.n_levels, config.optimisation.batch_size, config.seed
(20, 256, 3)
>>> config == DiKLConfig.from_dict(config.to_dict())  # the nested layout reads back
True
"""
import dataclasses
import math
from typing import Optional, Tuple

from .diffusion import PARAMETERIZATIONS, WEIGHTINGS

#: Values of ``schedule.space`` (see :mod:`openmm_dikl.dikl.spaces`).
DIFFUSION_SPACES = ("cartesian", "internal")

#: Rules of ``run.select_checkpoint`` (see :mod:`openmm_dikl.dikl.selection`).
SELECTION_RULES = ("mala_energy_tvd", "mean_energy", "digs_ramachandran_kl")

__all__ = ["ScheduleConfig", "PosteriorConfig", "OptimisationConfig", "RunConfig",
           "DiKLConfig", "SECTIONS", "SELECTION_RULES", "DIFFUSION_SPACES"]


# ---------------------------------------------------------------------- field checks
def _fail(section, name, requirement, value):
    raise ValueError(f"DiKLConfig {section}.{name} must be {requirement}, got {value!r}")


def _integer(section, obj, name, low, optional=False):
    value = getattr(obj, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < low:
        _fail(section, name, ("None or " if optional else "") + f"an integer >= {low}", value)
    object.__setattr__(obj, name, int(value))


def _positive(section, obj, name, optional=False):
    value = getattr(obj, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (math.isfinite(value) and value > 0):
        _fail(section, name, ("None or " if optional else "") + "a finite number > 0", value)
    object.__setattr__(obj, name, float(value))


def _interval(section, obj, name, low, high, closed_high, optional=True):
    value = getattr(obj, name)
    if optional and value is None:
        return
    inside = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and low < value and (value <= high if closed_high else value < high))
    if not inside:
        bracket = "]" if closed_high else ")"
        _fail(section, name, ("None or " if optional else "") + f"in ({low}, {high}{bracket}",
              value)
    object.__setattr__(obj, name, float(value))


def _choice(section, obj, name, choices, optional=False):
    value = getattr(obj, name)
    if not ((optional and value is None) or value in choices):
        _fail(section, name, ("None or " if optional else "") + f"one of {choices}", value)


def _finite(section, obj, name):
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(section, name, "a finite number", value)
    object.__setattr__(obj, name, float(value))


def _flag(section, obj, name, optional=False):
    value = getattr(obj, name)
    if not ((optional and value is None) or isinstance(value, bool)):
        _fail(section, name, ("None or " if optional else "") + "True or False", value)


# ---------------------------------------------------------------------- sections
@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """What a trained score network computes (fixed when fine-tuning).

    Attributes
    ----------
    n_levels, beta_min, beta_max : int, float, float
        :class:`~openmm_dikl.dikl.diffusion.VPSchedule`: T noise levels with β linearly
        spaced from ``beta_min`` to ``beta_max``, 0 < beta_min < beta_max < 1
        (defaults T = 30, β 1e-6 → 0.05: the DiKL paper's DW-4 settings).
    parameterization : {"noise", "score"}
        What the score network outputs (see :mod:`openmm_dikl.dikl.diffusion`).
    coordinate_scale : float
        Length c (nm) the diffusion works in units of (1.0): the score network, the VP
        kernel and the posterior see y = x / c, so the noise in nm is c·σ_t (the
        iDEM / DiKL data normalisation, e.g. c = 50 for their MoG-40 code).
    centre : bool or None
        Run the diffusion in the zero-centre-of-mass subspace; None = automatic (yes for
        translation-invariant targets, ``TargetSystem.translation_invariant``).  A
        trainer stores the resolved value in its checkpoints.
    space : {"cartesian", "internal"}
        Where the noise acts (see :mod:`openmm_dikl.dikl.spaces`): on the positions
        (default), or on the standardised internal coordinates that the target registers
        (``TargetSystem.internal_transform``: dimensionless, about unit width each, with
        the dihedrals cut where the target has least density).  With "internal" the
        score network sees (batch, 1, n_internal) and ``coordinate_scale`` must be 1 and
        ``centre`` not True.
    """

    n_levels: int = 30
    beta_min: float = 1e-6
    beta_max: float = 0.05
    parameterization: str = "noise"
    coordinate_scale: float = 1.0
    centre: Optional[bool] = None
    space: str = "cartesian"

    def __post_init__(self):
        _integer("schedule", self, "n_levels", 1)
        _positive("schedule", self, "beta_min")
        _positive("schedule", self, "beta_max")
        if not self.beta_min < self.beta_max < 1.0:
            raise ValueError(f"DiKLConfig schedule.beta_min and schedule.beta_max need "
                             f"0 < beta_min < beta_max < 1, got beta_min={self.beta_min}, "
                             f"beta_max={self.beta_max}")
        _choice("schedule", self, "parameterization", PARAMETERIZATIONS)
        _positive("schedule", self, "coordinate_scale")
        _flag("schedule", self, "centre", optional=True)
        _choice("schedule", self, "space", DIFFUSION_SPACES)
        if self.space == "internal" and (self.coordinate_scale != 1.0 or self.centre):
            raise ValueError("DiKLConfig schedule.space='internal' needs coordinate_scale = 1 "
                             "and centre None or False (internal coordinates have no "
                             f"centre of mass), got coordinate_scale={self.coordinate_scale}, "
                             f"centre={self.centre}")


@dataclasses.dataclass(frozen=True)
class PosteriorConfig:
    """The sampler of p(x | x_t) (see :class:`~openmm_dikl.dikl.posterior.PosteriorSampler`).

    Attributes
    ----------
    n_importance, n_ais_steps, n_mala_steps, n_posterior : int
        K importance proposals per x_t (20), annealed importance sampling steps (10),
        adaptive MALA steps after resampling (50), posterior samples kept per x_t (1).
    mala_init_step : float
        Initial MALA step size (nm²) at unit posterior width; level t starts at
        ``mala_init_step · min(1, σ_t² / α_t²)``.  Step sizes are kept per level and
        adapted across iterations (they are part of the checkpoint).
    acceptance_range : (float, float)
        Target band of the MALA acceptance, 0 < low <= high < 1 ([0.5, 0.6]).
    step_adapt_factor : float
        The step size of a level is multiplied (divided) by this factor > 1 when its
        acceptance is above (below) the band (1.1).
    average_last : int
        0 (default): the target score uses the last MALA iterate.  K in
        [1, n_mala_steps]: it uses the average of x and −∇u over the last K iterates of
        every chain (the reference code's LJ-13 posterior: the last 500 of 1000 steps).
        The mixed score identity is linear in (x, −∇u), so this is the time average of
        the single-iterate estimates: lower variance at the same number of target
        evaluations, and the same mean once the chains are in equilibrium.
    warm_start : bool
        Start the chains of each x_t at the generator sample it was made from instead of
        at importance samples (False; ``n_importance`` and ``n_ais_steps`` are then
        unused).  See :meth:`~openmm_dikl.dikl.posterior.PosteriorSampler.sample`.
    jump_every : int
        0 (default): MALA only.  k > 0: after every k-th MALA step, one uniform jump of a
        periodic coordinate of the diffusion space (the wide dihedrals of
        ``schedule.space = "internal"``; see ``jumps`` of
        :class:`~openmm_dikl.dikl.posterior.PosteriorSampler`).
    """

    n_importance: int = 20
    n_ais_steps: int = 10
    n_mala_steps: int = 50
    n_posterior: int = 1
    mala_init_step: float = 1e-2
    acceptance_range: Tuple[float, float] = (0.5, 0.6)
    step_adapt_factor: float = 1.1
    average_last: int = 0
    warm_start: bool = False
    jump_every: int = 0

    def __post_init__(self):
        _integer("posterior", self, "n_importance", 1)
        _integer("posterior", self, "n_ais_steps", 0)
        _integer("posterior", self, "n_mala_steps", 0)
        _integer("posterior", self, "n_posterior", 1)
        _positive("posterior", self, "mala_init_step")
        try:
            low, high = (float(a) for a in self.acceptance_range)
        except (TypeError, ValueError):
            _fail("posterior", "acceptance_range", "a pair (low, high)", self.acceptance_range)
        if not 0.0 < low <= high < 1.0:
            _fail("posterior", "acceptance_range", "(low, high) with 0 < low <= high < 1",
                  self.acceptance_range)
        object.__setattr__(self, "acceptance_range", (low, high))
        _positive("posterior", self, "step_adapt_factor")
        if not self.step_adapt_factor > 1.0:
            _fail("posterior", "step_adapt_factor", "> 1", self.step_adapt_factor)
        _integer("posterior", self, "average_last", 0)
        if self.average_last > self.n_mala_steps:
            _fail("posterior", "average_last",
                  f"<= posterior.n_mala_steps = {self.n_mala_steps}", self.average_last)
        _flag("posterior", self, "warm_start")
        _integer("posterior", self, "jump_every", 0)


@dataclasses.dataclass(frozen=True)
class OptimisationConfig:
    """Batches, learning rates, loss weightings and the weight average.

    Attributes
    ----------
    batch_size : int
        Generator samples per generator step (1024).
    score_batch_size : int or None
        Samples per score (DSM) step; None = ``batch_size``.
    score_samples_per_iter : int or None
        None (default): every DSM step draws fresh generator samples, as the reference
        code does.  N: N generator samples are drawn once per iteration and every DSM
        step of that iteration takes a random ``score_batch_size`` of them (fresh noise
        and levels each step; cheaper, what the shipped recipes use).
    score_steps_per_iter : int
        DSM steps per iteration (100).
    lr_generator, lr_score : float
        Adam learning rates (5e-4, 1e-4).
    weighting : {"sigma2", "uniform", "inv_alpha"}
        Level weight w(t) of the DSM loss (and of the DiKL gradient unless
        ``generator_weighting`` is set); see :func:`~openmm_dikl.dikl.diffusion.level_weights`.
    generator_weighting : {"sigma2", "uniform", "inv_alpha"} or None
        Level weight of the DiKL generator gradient; None = ``weighting``.
    grad_clip : float or None
        Clip the global gradient norm of both networks.
    lr_decay : float or None
        In (0, 1]: both learning rates follow a cosine from their initial value down to
        ``lr_decay`` times it at iteration ``run.n_iterations`` (and stay there); None
        keeps them constant (see :mod:`openmm_dikl.dikl.optimisation`).
    ema_decay : float or None
        In (0, 1): keep an exponential moving average of the generator weights, used for
        evaluation and for the saved sampler.
    score_clip : float or None
        Clip each particle's vector of the score difference s_model − s_target in the
        generator gradient to this norm (1/y-units); the logged ``score_gap`` is the
        unclipped one.
    min_level : int
        Lowest noise level index the DSM and DiKL losses draw: levels are uniform on
        {min_level, …, T−1} (0, all levels).  1 follows the reference code (t from
        1 … T−1: the least noisy level, σ ≈ 1e-3 with the paper's schedule, is never
        trained).  It changes which levels are trained, not what the score network
        computes, so it is no ``schedule`` setting; must be < ``schedule.n_levels``.
    """

    batch_size: int = 1024
    score_batch_size: Optional[int] = None
    score_samples_per_iter: Optional[int] = None
    score_steps_per_iter: int = 100
    lr_generator: float = 5e-4
    lr_score: float = 1e-4
    weighting: str = "sigma2"
    generator_weighting: Optional[str] = None
    grad_clip: Optional[float] = None
    lr_decay: Optional[float] = None
    ema_decay: Optional[float] = None
    score_clip: Optional[float] = None
    min_level: int = 0
    score_warmup_steps: int = 0

    def __post_init__(self):
        _integer("optimisation", self, "batch_size", 1)
        _integer("optimisation", self, "score_batch_size", 1, optional=True)
        _integer("optimisation", self, "score_samples_per_iter", 1, optional=True)
        _integer("optimisation", self, "score_steps_per_iter", 0)
        _positive("optimisation", self, "lr_generator")
        _positive("optimisation", self, "lr_score")
        _choice("optimisation", self, "weighting", WEIGHTINGS)
        _choice("optimisation", self, "generator_weighting", WEIGHTINGS, optional=True)
        _positive("optimisation", self, "grad_clip", optional=True)
        _interval("optimisation", self, "lr_decay", 0.0, 1.0, closed_high=True)
        _interval("optimisation", self, "ema_decay", 0.0, 1.0, closed_high=False)
        _positive("optimisation", self, "score_clip", optional=True)
        _integer("optimisation", self, "min_level", 0)
        _integer("optimisation", self, "score_warmup_steps", 0)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How a run proceeds; free to change when resuming.

    Attributes
    ----------
    n_iterations : int
        Default total length of ``DiKLTrainer.train`` (2000); also the end of the
        learning-rate cosine (a resumed run with another value stretches it from there).
    checkpoint_every, eval_every : int
        Checkpoint and evaluation periods in iterations (100, 0; 0 = never).
    eval_samples : int
        Generator samples handed to ``eval_fn`` (2000).
    use_bridge : bool
        Take forces from OpenMM through the bridge even when a torch twin exists.
    select_checkpoint : {None, "mala_energy_tvd", "mean_energy", "digs_ramachandran_kl"}
        Checkpoint selection without validation data (see
        :mod:`openmm_dikl.dikl.selection`): every ``eval_every`` iterations the weight
        average is scored on ``eval_samples`` samples and the best one so far is kept as
        ``best_sampler.pt`` (lower is better).  ``"mala_energy_tvd"``: energy TVD between
        the samples and the same samples after ``select_mala_steps`` MALA steps (the
        reference code's DW-4 rule); ``"mean_energy"``: mean reduced energy of the
        samples with u < ``select_energy_cutoff`` (its LJ-13 rule);
        ``"digs_ramachandran_kl"``: KL of the Ramachandran histogram after
        ``select_mala_steps`` DiGS sweeps from the one before (for molecules).  Needs
        ``eval_every`` > 0.  None (default): no selection.
    select_mala_steps : int
        MALA steps of ``"mala_energy_tvd"`` (50, the reference code's), DiGS sweeps of
        ``"digs_ramachandran_kl"``.
    select_energy_cutoff : float
        Energy cutoff (kT) of ``"mean_energy"`` (300, the reference code's).
    """

    n_iterations: int = 2000
    checkpoint_every: int = 100
    eval_every: int = 0
    eval_samples: int = 2000
    use_bridge: bool = False
    select_checkpoint: Optional[str] = None
    select_mala_steps: int = 50
    select_energy_cutoff: float = 300.0

    def __post_init__(self):
        for name in ("n_iterations", "checkpoint_every", "eval_every", "eval_samples"):
            _integer("run", self, name, 0)
        _flag("run", self, "use_bridge")
        _choice("run", self, "select_checkpoint", SELECTION_RULES, optional=True)
        if self.select_checkpoint is not None and not self.eval_every:
            _fail("run", "select_checkpoint", "None when run.eval_every is 0 (selection "
                  "scores the sampler every eval_every iterations)", self.select_checkpoint)
        _integer("run", self, "select_mala_steps", 1)
        _finite("run", self, "select_energy_cutoff")


#: Section name -> section class, in the order of :class:`DiKLConfig`.
SECTIONS = {"schedule": ScheduleConfig, "posterior": PosteriorConfig,
            "optimisation": OptimisationConfig, "run": RunConfig}
#: Flat setting name -> its section (the layout of recipes and of format-1 checkpoints).
_SECTION_OF = {field.name: section for section, cls in SECTIONS.items()
               for field in dataclasses.fields(cls)}


def _seed(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"DiKLConfig seed must be an integer, got {value!r}")
    return int(value)


def _build_section(name, settings):
    """``SECTIONS[name](**settings)`` with unknown keys named (and their section, if any)."""
    cls = SECTIONS[name]
    known = {field.name for field in dataclasses.fields(cls)}
    for key in settings:
        if key not in known:
            hint = f" (it belongs to {_SECTION_OF[key]})" if key in _SECTION_OF else ""
            raise ValueError(f"unknown DiKLConfig setting {name}.{key}{hint}")
    return cls(**settings)


@dataclasses.dataclass(frozen=True)
class DiKLConfig:
    """Settings of a DiKL run (defaults: the DiKL paper's DW-4 settings).

    Parameters
    ----------
    schedule : ScheduleConfig or dict
        Noise schedule, parameterisation, coordinate scale, centring.
    posterior : PosteriorConfig or dict
        Posterior sampler settings.
    optimisation : OptimisationConfig or dict
        Batches, learning rates, weightings, clipping, weight average.
    run : RunConfig or dict
        Length, checkpoint and evaluation periods, force source.
    seed : int
        Seed of the trainer's torch.Generator (all randomness of a run).

    Raises
    ------
    ValueError
        An invalid or unknown setting (the message names it, e.g. ``schedule.beta_min``).
    TypeError
        A section that is neither its dataclass nor a dict.

    Notes
    -----
    Build a config from the flat layout of recipes (``{"n_levels": 20, ...}``), from the
    nested layout of :meth:`to_dict` or from a mix with :meth:`from_dict`; change
    settings with :meth:`replace`.  The module docstring states which sections must
    match a checkpoint to resume it or to fine-tune from it.
    """

    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    posterior: PosteriorConfig = dataclasses.field(default_factory=PosteriorConfig)
    optimisation: OptimisationConfig = dataclasses.field(default_factory=OptimisationConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    seed: int = 0

    def __post_init__(self):
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                value = _build_section(name, value)
            elif not isinstance(value, cls):
                raise TypeError(f"DiKLConfig {name} must be a {cls.__name__} or a dict, got "
                                f"{type(value).__name__}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "seed", _seed(self.seed))
        n_levels = self.schedule.n_levels
        if self.optimisation.min_level >= n_levels:
            _fail("optimisation", "min_level", f"< schedule.n_levels = {n_levels}",
                  self.optimisation.min_level)

    @classmethod
    def from_dict(cls, settings):
        """A config from a dict in the flat layout, the nested layout, or a mix of both.

        Parameters
        ----------
        settings : dict or DiKLConfig
            Flat keys (``"n_levels"``, ``"batch_size"``, ...: the ``"dikl"`` part of a
            recipe, the config of a format-1 checkpoint), section keys holding dicts
            (``{"schedule": {"n_levels": 20}}``: :meth:`to_dict`), and ``"seed"``.
            Missing settings get their defaults.  A DiKLConfig is returned as is.

        Raises
        ------
        ValueError
            An unknown key, a setting given twice, or an invalid value.
        """
        if isinstance(settings, DiKLConfig):
            return settings
        if not isinstance(settings, dict):
            raise TypeError(f"DiKL settings must be a dict, got {type(settings).__name__}")
        sections = {name: {} for name in SECTIONS}
        seed = {}

        def put(section, key, value):
            if key in sections[section]:
                raise ValueError(f"DiKLConfig setting {section}.{key} is given twice")
            sections[section][key] = value

        for key, value in settings.items():
            if key == "seed":
                seed["seed"] = value
            elif key in SECTIONS:
                if isinstance(value, SECTIONS[key]):
                    value = dataclasses.asdict(value)
                if not isinstance(value, dict):
                    raise TypeError(f"DiKLConfig {key} must be a dict of settings, got "
                                    f"{type(value).__name__}")
                for inner, inner_value in value.items():
                    put(key, inner, inner_value)
            elif key in _SECTION_OF:
                put(_SECTION_OF[key], key, value)
            else:
                raise ValueError(f"unknown DiKLConfig setting {key!r}")
        return cls(**{name: _build_section(name, values) for name, values in sections.items()},
                   **seed)

    def to_dict(self):
        """The settings as a nested dict of plain values (what checkpoints store)."""
        return dataclasses.asdict(self)

    def replace(self, **changes):
        """A copy with some settings changed, named flat (``n_levels=5``) or by section
        (``schedule=ScheduleConfig(...)``, a whole section)."""
        settings = self.to_dict()
        for key, value in changes.items():
            if key in SECTIONS or key == "seed":
                settings[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) \
                    else value
            elif key in _SECTION_OF:
                settings[_SECTION_OF[key]][key] = value
            else:
                raise ValueError(f"unknown DiKLConfig setting {key!r}")
        return DiKLConfig.from_dict(settings)

    def differences(self, other, sections):
        """``"section.name=theirs (now mine)"`` for every setting of ``sections`` (names
        of :data:`SECTIONS`, or ``"seed"``) in which ``other`` differs from this config."""
        changed = []
        for name in sections:
            if name == "seed":
                if other.seed != self.seed:
                    changed.append(f"seed={other.seed!r} (now {self.seed!r})")
                continue
            mine, theirs = getattr(self, name), getattr(other, name)
            for field in dataclasses.fields(mine):
                a, b = getattr(theirs, field.name), getattr(mine, field.name)
                if a != b:
                    changed.append(f"{name}.{field.name}={a!r} (now {b!r})")
        return changed

    def resume_differences(self, other):
        """What keeps a run with settings ``other`` from being resumed with these: every
        difference outside the ``run`` section (empty list: it may be resumed)."""
        return self.differences(other, [s for s in SECTIONS if s != "run"] + ["seed"])

    def fine_tune_differences(self, other):
        """What keeps the networks of a run with settings ``other`` from being trained
        further with these: every difference in the ``schedule`` section."""
        return self.differences(other, ["schedule"])
