"""The records: what a run is asked to do (RunSpec, Settings) and what it produced
(RunResult, SNRResult). Plain data, JSON-serialisable, importable without torch or the
training code, so the store, the claims and the report can read results on their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from e2elab.errors import E2ELabError, choices
from e2elab.stats import mean_interval

# Bump when a change to the code changes what a stored spec would produce.
SPEC_VERSION = 7
# 3: every run trains under numerics.fixed_numerics (one thread, fixed backend flags) and
#    with position-independent Adam/SGD kernels on the CPU, so a spec gives one result
#    whichever command trains it and whichever seeds share its batch.
# 4: the accuracy threshold left the id (a judgement made after training: changing it
#    re-scores stored runs); the id covers a fingerprint of the task's code; ports carry
#    loss weights.
# 5: seeds are stacked only where stacking keeps a seed's numbers bit for bit (a system
#    where the check finds a difference, e.g. pentomino's and parity's, trains alone).
# 6: the stacked code is the reference: a lone seed trains as a stack of one where the
#    plain code rounds otherwise (AMD CPUs with MKL); evaluation chunks no longer shrink
#    with the stack size, and stacked evaluation gives every seed its own input slice.
# 7: linear probes are fitted in torch for a whole stack at once, to convergence
#    (diagnostics.readout; scikit-learn's lbfgs stopped at 300 iterations on some
#    ports), which moves stored probe numbers by up to about 0.02.

OPTIMIZER_NAMES = ("adam", "sgd")
# the largest learning rate: Adam's step divides it by 1 - beta1 = 0.1 and hands it to a
# float32 kernel, which refuses values beyond 3.4e38
MAX_LR = 1e30
PLATEAU_DELTA = 0.002
SELECTIONS = ("last", "validation")
VALIDATION = "@validation"  # suffix of a port's validation metric in a curve
# Bounds no real setting reaches: past them a value is a typo, not a plan (1e10 examples
# of the fastest task take about a day on a CPU).
MAX_BUDGET = 10**10
MAX_BATCH_SIZE = 1 << 20
MAX_EVALUATIONS = 100_000
MAX_SEEDS = 10_000
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def setting(
    help: str,
    default: Any = dataclasses.MISSING,
    training: bool = True,
    flag: bool = True,
    **limits: Any,
) -> Any:
    """A Settings field: its default, the help its flag shows, whether an experiment's
    ``training:`` sets it (``training``) and ``e2elab run`` has a flag for it (``flag``),
    and the limits pydantic checks in the experiment file (``ge``, ``le``, ``gt``, ...)."""
    meta = {"help": help, "training": training, "flag": flag, "limits": limits}
    if default is dataclasses.MISSING:
        return meta
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Every training setting that is not the task, its knobs, the strategy or the seed.

    A task gives its defaults as one Settings (``Task.defaults``); an experiment file and
    then the command line override fields with ``override``; ``validate`` checks them
    once, where they enter. ``threshold`` is a judgement made after training (the metric
    that counts as "reached"), and ``device`` says where to train: neither is part of a
    run's id.
    """

    # Each field says, in its metadata, what the command line's flag and the experiment
    # file's ``training:`` key show of it (see ``setting``): the pydantic model of
    # ``training:`` and ``e2elab run``'s flags are generated from these fields.
    budget: int = field(
        metadata=setting("training examples per run", training=False, ge=1, le=MAX_BUDGET)
    )
    batch_size: int = setting("examples per step", 64, ge=1, le=MAX_BATCH_SIZE)
    lr: float = setting("learning rate", 1e-3, gt=0, allow_inf_nan=False)
    threshold: float = setting("accuracy for examples-to-threshold", 0.9, allow_inf_nan=False)
    evaluations: int = setting(
        "held-out evaluations per run, evenly spaced", 20, ge=1, le=MAX_EVALUATIONS
    )
    optimizer: str = setting("adam or sgd", "adam")
    device: str = setting("", "cpu", training=False, flag=False)
    # stop when the output's metric has not risen by more than PLATEAU_DELTA over the best
    # so far for this many evaluations in a row (in the last phase); 0: train the budget
    patience: int = setting(
        "stop a run when its output has not gained 0.002 for this many evaluations",
        0,
        ge=0,
        le=MAX_EVALUATIONS,
    )
    # "validation": a run reports its test metrics at the evaluation of its last phase
    # with the best validation score of the output (early stopping chosen on held-out
    # data, never on the test set; needs Task.validation_set); "last": at its end
    select: str = setting(
        "last or validation: report the evaluation with the best validation score",
        "last",
    )
    # modules whose trained parameters the run keeps in the store ("recognizer,adder_1",
    # or "*" for every module; see e2elab.checkpoints): not in the id, a run that lacks
    # them is trained again (bit for bit the same weights)
    save_modules: str = setting("", "", training=False, flag=False)
    # modules loaded from checkpoints before training: "MODULE=SHA256,..." (in the id:
    # the weights, not where they were read) and where to read them, "MODULE=SOURCE,..."
    # with SOURCE a checkpoint file or STORE#RUN_ID (not in the id)
    load: str = setting("", "", training=False, flag=False)
    load_from: str = setting("", "", training=False, flag=False)
    # ports forced to their true values in an extra evaluation of the trained system (see
    # e2elab.oracle): "trained", "others" or port patterns, sets separated by ";". Not in
    # the id: a stored run without the evaluation asked for is trained again (the same
    # weights). Its flag, --oracle, belongs to run and reproduce alike.
    oracle: str = setting("", "", flag=False)

    def override(self, **changes: Any) -> Settings:
        """These settings with every change that is not None laid over them."""
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = set(given) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            names = [f.name for f in dataclasses.fields(self)]
            raise choices("training setting", sorted(unknown)[0], names)
        return dataclasses.replace(self, **given)

    def validate(self) -> Settings:
        """Check every field; one line naming the field and the fix if one is wrong."""
        limits = {
            f.name: f.metadata["limits"]["le"]
            for f in dataclasses.fields(self)
            if f.metadata["limits"].get("ge") == 1 and "le" in f.metadata["limits"]
        }
        for name, most in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise E2ELabError(f"{name} must be a positive integer, got {value!r}")
            if value > most:
                raise E2ELabError(f"{name} must be at most {most:,}, got {value:,}")
        if self.select not in SELECTIONS:
            raise choices("select", self.select, list(SELECTIONS))
        patience = self.patience
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise E2ELabError(f"patience must be a whole number >= 0, got {patience!r}")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
            raise E2ELabError(f"lr must be a positive finite number, got {lr!r}")
        if lr > MAX_LR:
            raise E2ELabError(
                f"lr must be at most {MAX_LR:g} (a larger one overflows float32 in the "
                f"optimiser's step), got {lr!r}"
            )
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise E2ELabError(f"threshold must be a number, got {threshold!r}")
        if not math.isfinite(threshold):
            raise E2ELabError(f"threshold must be a finite number, got {threshold!r}")
        for name in ("save_modules", "load", "load_from", "oracle"):
            if not isinstance(getattr(self, name), str):
                raise E2ELabError(f"{name} must be text, got {getattr(self, name)!r}")
        if self.optimizer not in OPTIMIZER_NAMES:
            raise choices("optimizer", self.optimizer, list(OPTIMIZER_NAMES))
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise E2ELabError(
                f"unknown device {self.device!r}; choose one of: auto, cpu, cuda, cuda:N, mps"
            )
        return self


# Kept for code written against earlier versions: a task's defaults are Settings.
TrainingDefaults = Settings

_SETTING_NAMES = tuple(f.name for f in dataclasses.fields(Settings))


def _scalar(value: Any) -> bool:
    """A knob's value: a number, text, a truth value or None (or a list of them)."""
    if isinstance(value, list):
        return all(_scalar(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


_SPEC_FIELDS = ("task", "knobs", "strategy", "seed", "code", "source", "version")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's result. Build with ``e2elab.execution.make_spec``
    (which fills defaults from the task and validates), or directly from validated parts.

    ``code`` fingerprints the code that defines the task and its system (for shipped
    tasks, the e2elab version), so a changed task is never answered from a stale store.
    ``source`` is ``module:Class`` for a task outside the registry, so that worker
    processes can import it.
    """

    task: str
    knobs: dict[str, Any]
    strategy: str
    seed: int
    settings: Settings
    code: str = ""
    source: str | None = None
    # the spec version of the code that made it: SPEC_VERSION for a new spec, what was
    # stored for a stored one (None: stored before versions were recorded)
    version: int | None = SPEC_VERSION

    @property
    def id(self) -> str:
        """A hash of every field that changes the result (not the device or threshold)."""
        fields = self.to_dict()
        for name in ("device", "threshold", "save_modules", "load_from", "oracle"):
            fields.pop(name, None)
        if not fields.get("load"):  # nothing loaded: the ids of runs stored before it
            fields.pop("load", None)
        if not fields.get("patience"):  # off: the ids of runs stored before it existed
            fields.pop("patience", None)
        if fields.get("select", "last") == "last":
            fields.pop("select", None)
        fields["version"] = SPEC_VERSION
        text = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """Flat: the settings' fields sit beside task, knobs, strategy and seed."""
        return {
            "task": self.task,
            "knobs": dict(self.knobs),
            "strategy": self.strategy,
            "seed": self.seed,
            **dataclasses.asdict(self.settings),
            "code": self.code,
            "source": self.source,
            # what the id's hash covers as well; stored with each result, so that runs of
            # older code can be told apart (see ``code_version``)
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """From ``to_dict``'s flat form, as stored (a field stored by no version, e.g. the
        version of a run stored before versions were recorded, reads as missing).
        Raises ``TypeError`` for a field of the wrong kind (a damaged record)."""
        settings = Settings(**{k: data[k] for k in _SETTING_NAMES if k in data})
        spec = cls(
            task=data["task"],
            knobs=data["knobs"],
            strategy=data["strategy"],
            seed=data["seed"],
            settings=settings,
            code=data.get("code", ""),
            source=data.get("source"),
            version=data.get("version"),
        )
        spec._check_kinds()
        return spec

    def _check_kinds(self) -> None:
        def kind(value: Any, *kinds: type) -> bool:
            return isinstance(value, kinds) and not isinstance(value, bool)

        knobs = self.knobs
        wrong = [
            name
            for name, ok in (
                ("task", isinstance(self.task, str)),
                ("strategy", isinstance(self.strategy, str)),
                ("seed", kind(self.seed, int)),
                ("code", isinstance(self.code, str)),
                ("source", self.source is None or isinstance(self.source, str)),
                ("version", self.version is None or kind(self.version, int)),
                ("knobs", isinstance(knobs, dict) and all(_scalar(v) for v in knobs.values())),
            )
            if not ok
        ]
        for f in dataclasses.fields(self.settings):
            value, default = getattr(self.settings, f.name), f.default
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int) or f.name == "budget":
                ok = kind(value, int)
            elif isinstance(default, float):
                ok = kind(value, int, float)
            else:
                ok = isinstance(value, type(default))
            if not ok:
                wrong.append(f.name)
        if wrong:
            raise TypeError(f"spec field {wrong[0]} is of the wrong kind")

    def value(self, name: str) -> Any:
        """A field or a setting by name (``strategy``, ``seed``, ``budget``, ``lr``...,
        and ``id``); None for a name that is neither."""
        if name == "id":
            return self.id
        if name in _SPEC_FIELDS:
            return getattr(self, name)
        return getattr(self.settings, name, None)

    def changed(self, **changes: Any) -> RunSpec:
        """This spec with fields and settings replaced by name (``knobs=``, ``budget=``)."""
        own = {k: v for k, v in changes.items() if k in _SPEC_FIELDS}
        settings = {k: v for k, v in changes.items() if k not in _SPEC_FIELDS}
        unknown = set(settings) - set(_SETTING_NAMES)
        if unknown:
            raise choices("spec field", sorted(unknown)[0], [*_SPEC_FIELDS, *_SETTING_NAMES])
        return dataclasses.replace(
            self, settings=dataclasses.replace(self.settings, **settings), **own
        )

    def __getitem__(self, name: str) -> Any:
        """``spec["seed"]``, as when a result's spec was a dict: deprecated, read the
        attribute (``spec.seed``, ``spec.settings.budget``) or ``spec.value(name)``."""
        warnings.warn(
            f"RunResult.spec is a RunSpec: read spec.value({name!r}) or its attribute, "
            f"not spec[{name!r}]",
            DeprecationWarning,
            stacklevel=2,
        )
        if name not in self.to_dict():
            raise KeyError(name)
        return self.to_dict()[name]

    def relabelled(self, strategy: str) -> RunSpec:
        """The same spec shown under another strategy label (``e2e@n1``, ``from:modular``):
        for tables and claims only; its ``id`` is not the run's."""
        return dataclasses.replace(self, strategy=strategy)

    def with_settings(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, settings=self.settings.override(**changes))

    def seed_group(self) -> str:
        """Specs with the same key differ only by seed and can be trained together."""
        fields = self.to_dict()
        fields.pop("seed")
        return json.dumps(fields, sort_keys=True, default=str)


# fields stored under another name by earlier versions: old -> new
_RENAMED = {"breakdown": "at_chance", "breakdown_p_value": "at_chance_p_value"}


@dataclass
class RunResult:
    """The outcome of one run, JSON-serialisable."""

    id: str
    spec: RunSpec
    status: str
    reason: str | None
    output: str
    curve: list[dict[str, Any]]
    final: dict[str, float]
    chance: dict[str, float]
    examples_to_threshold: int | None
    # the output is not distinguishable from chance (a test on the test-set size; see
    # run.at_chance), and that test's p-value; the ``breakdown`` check asks more
    at_chance: bool
    at_chance_p_value: float | None
    test_size: int
    wall_seconds: float
    memory: dict[str, Any]
    phases: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, float] = field(default_factory=dict)
    probes_at_init: dict[str, float] = field(default_factory=dict)
    modules: dict[str, list[str]] = field(default_factory=dict)
    # what the numbers depend on besides the spec (see numerics.describe); not in the id
    numerics: dict[str, Any] = field(default_factory=dict)
    # SHA-256 of the trained parameters: the same spec gives the same hash, bit for bit
    weights_sha256: str | None = None
    # per port: how its metric reads ("accuracy", "balanced accuracy", "R2", ...)
    metric_names: dict[str, str] = field(default_factory=dict)
    probe_metric: dict[str, str] = field(default_factory=dict)
    # with Settings.select "validation": the examples at the evaluation whose test
    # metrics ``final`` reports
    selected_at: int | None = None
    # small things a task keeps from the trained system (Task.artifacts), e.g. the
    # first layer's filters for a figure; plain lists and numbers
    artifacts: dict[str, Any] = field(default_factory=dict)
    # module -> checkpoint bytes (Settings.save_modules), on their way to the store: kept
    # in its own table, never in the result's JSON (read them with Store.checkpoint)
    checkpoints: dict[str, bytes] = field(default_factory=dict, repr=False)
    # when the store took it (UTC, filled when read from a store)
    stored_at: str | None = None
    # Settings.oracle's evaluations: {set: {"ports": [forced], "metrics": {port: value}}}
    oracle: dict[str, Any] = field(default_factory=dict)
    # where this run's wall time went (see ``timesplit``): seconds of training steps,
    # evaluation, probes, black-box fitting and set-up; its share where seeds trained
    # together. Not in the id, and no two runs of a spec need agree on it
    timing: dict[str, float] = field(default_factory=dict)
    # what trained it (learners): "system", the task's system under a strategy, or
    # "model", a scikit-learn model (a black box), which has no modules to probe or save
    learner: str = "system"

    @property
    def code_version(self) -> str:
        """The code a run was trained under: e2elab's spec version and the fingerprint of
        the task's code (``RunSpec.code``), e.g. ``6/0.1.0``; runs stored before spec
        versions were recorded read ``?/...``."""
        version = "?" if self.spec.version is None else self.spec.version
        return f"{version}/{self.spec.code or '-'}"

    @property
    def output_metric(self) -> float:
        return self.final.get(self.output, float("nan"))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(dataclasses.replace(self, checkpoints={}))
        out.pop("checkpoints")
        out["spec"] = self.spec.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        known = {f.name for f in dataclasses.fields(cls)}
        renamed = {old: new for old, new in _RENAMED.items() if old in data and new not in data}
        data = {renamed.get(k, k): v for k, v in data.items()}
        if "learner" not in data:  # stored before results named their learner
            black_box = str(data.get("spec", {}).get("strategy", "")).startswith("blackbox")
            data["learner"] = "model" if black_box else "system"
        data["spec"] = RunSpec.from_dict(data["spec"])
        return cls(**{k: v for k, v in data.items() if k in known})

    def phase_ends(self) -> list[dict[str, Any]]:
        """Per phase: its label, the examples drawn when it ended and the output's metric
        there (read from the curve for runs stored before phases recorded it; NaN and -1
        for a phase that was never evaluated, e.g. one given no examples)."""
        out = []
        for index, phase in enumerate(self.phases):
            end = phase if "metrics" in phase else phase_end(self.curve, index)
            value = end["metrics"].get(self.output, math.nan) if end else math.nan
            examples = end.get("examples", -1) if end else -1  # -1: never evaluated
            out.append({"label": phase["label"], "examples": examples, "output": value})
        return out

    def rescored(self, threshold: float) -> RunResult:
        """This run judged against another accuracy threshold: examples-to-threshold is
        read again from the stored curve; nothing is retrained."""
        if threshold == self.spec.settings.threshold:
            return self
        spec = self.spec.with_settings(threshold=threshold)
        reached = examples_to_threshold(self.curve, self.output, threshold)
        return dataclasses.replace(self, spec=spec, examples_to_threshold=reached)


def phase_end(curve: list[dict[str, Any]], index: int) -> dict[str, Any]:
    """``{"examples", "metrics"}`` at the end of phase ``index``: the curve's last point
    evaluated in that phase (the loop evaluates at every phase's end); {} if none."""
    points = [p for p in curve if p.get("phase") == index]
    if not points:
        return {}
    return {"examples": int(points[-1]["examples"]), "metrics": dict(points[-1]["metrics"])}


def examples_to_threshold(curve: list[dict[str, Any]], port: str, threshold: float) -> int | None:
    """Training examples drawn when ``port`` first reached ``threshold`` (None: never)."""
    for point in curve:
        if point["metrics"].get(port, float("-inf")) >= threshold:
            return int(point["examples"])
    return None


@dataclass
class SNRResult:
    """Per module and initialisation: the SNR estimate, and whether it is resolved (if not,
    ``per_init`` holds its upper bound); their log10 summary over initialisations."""

    task: str
    knobs: dict[str, Any]
    strategy: str
    phase: str
    batch_size: int
    batches: int
    per_init: dict[str, list[float]] = field(default_factory=dict)
    resolved: dict[str, list[bool]] = field(default_factory=dict)
    noise_top_share: dict[str, list[float]] = field(default_factory=dict)
    # "sampled" (estimated from `batches` batches) or "exact" (summed over the task's
    # finite training distribution of `batches` examples: never a bound)
    method: str = "sampled"
    # per module and init: the cosine between the mean gradient of the measured loss and
    # the mean gradient of the loss on the module's own ports (its supervised direction);
    # near 0: the loss carries none of what the module's target would teach it
    alignment: dict[str, list[float]] = field(default_factory=dict)

    def log10_summary(self, module: str) -> tuple[float, float, float]:
        """Mean and 95% interval of log10 SNR over initialisations. Where an init's SNR is
        not resolved its upper bound enters, so the mean is then itself an upper bound
        (see ``is_bound``)."""
        logs = [math.log10(max(v, 1e-300)) for v in self.per_init[module]]
        ci = mean_interval(logs)
        return ci.mean, ci.lo, ci.hi

    def is_bound(self, module: str) -> bool:
        """True if some initialisation's SNR was below resolution (an upper bound)."""
        return not all(self.resolved.get(module, [True]))

    def describe(self, module: str) -> str:
        """log10 SNR as text, e.g. '-2.31' or '<= -4.02' (an upper bound)."""
        mean = self.log10_summary(module)[0]
        return f"<= {mean:.2f}" if self.is_bound(module) else f"{mean:.2f}"
