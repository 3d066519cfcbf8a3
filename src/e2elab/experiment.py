"""Experiments: a YAML file naming a grid of runs and the claims to check on them.

A file holds the task (a shipped name, ``module:Class`` or a published entry point),
fixed knobs, a grid of swept knobs (every combination runs), the strategies, the number
of seeds, the budget, optional training overrides, named profiles (``quick``) that
override any of those fields, and the claims. It is validated on load; each error names
the file, the field and the fix. Nothing here needs torch: reading a stored experiment
back (for a report) must not load the training code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from e2elab.claims import CHECKS, check_params
from e2elab.errors import E2ELabError
from e2elab.records import MAX_BATCH_SIZE, MAX_BUDGET, MAX_SEEDS, RunResult, RunSpec, Settings

# an experiment file larger than this is refused before it is parsed
MAX_FILE_BYTES = 1 << 20
# the most values (scalars, lists and mappings) a file may hold once its YAML aliases are
# expanded: a file of 750 bytes can alias its way to 10^9 (an "alias bomb")
MAX_EXPANDED_VALUES = 200_000


class _Strict(BaseModel):
    # strict: `seeds: true` or `budget: "5"` are refused, not converted
    model_config = ConfigDict(extra="forbid", strict=True)


def _training_model() -> type[BaseModel]:
    """The ``training:`` block: every Settings field whose metadata says an experiment
    sets it, with its type and limits (a setting is written once, in ``Settings``)."""
    types = {"int": int, "float": float, "str": str}
    fields: dict[str, Any] = {
        f.name: (types[str(f.type)] | None, Field(None, **f.metadata["limits"]))
        for f in dataclasses.fields(Settings)
        if f.metadata.get("training")
    }
    return create_model("Training", __base__=_Strict, **fields)


Training = _training_model()


class ClaimSpec(_Strict):
    id: str
    check: str
    statement: str
    params: dict[str, Any] = {}
    # a diagnostic claim: the ids of the claims whose FAIL it explains when it passes
    explains: list[str] = []
    # the figures that show it on the report page (file names without .png, or their
    # beginnings); by default those its check registers (claims.CHECK_FIGURES)
    figures: list[str] = []


class SNRSpec(_Strict):
    """Gradient signal-to-noise to measure at every grid point (see diagnostics.snr)."""

    strategies: list[str] = Field(["e2e", "hinted"], min_length=1)
    inits: int = Field(3, ge=2, le=1000)
    batches: int = Field(20, ge=3, le=100_000)
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE)
    # which phase of each strategy (negative: from the end); a later phase is measured
    # where it starts, after the phases before it trained on their share of the budget
    phase: int = Field(0, ge=-100, le=100)
    # sum over the task's finite training distribution instead of sampling batches:
    # true (every strategy) or the strategies to measure so (others are sampled)
    exact: bool | list[str] = False

    def is_exact(self, strategy: str) -> bool:
        return strategy in self.exact if isinstance(self.exact, list) else self.exact


LABEL = r"^[A-Za-z0-9_.-]+$"


class Variant(_Strict):
    """More runs: ``strategies`` at every grid point with some fixed knobs set otherwise
    (e.g. the same system with modules three times as wide), or with another budget of
    training examples (e.g. a quarter of it), or both. Claims and figures see them as
    strategy ``STRATEGY@LABEL`` at the grid point they extend."""

    label: str = Field(pattern=LABEL, max_length=40)
    knobs: dict[str, Any] = {}
    budget: int | None = Field(None, ge=1, le=MAX_BUDGET)
    strategies: list[str] = Field(min_length=1)


class Transfer(_Strict):
    """Module reuse: every run of the ``source`` experiment (in the same store; a part
    before this one in a suite) under each of ``strategies`` gives its trained
    ``module``, with the same seed, to a run here that loads it, freezes it and trains
    the rest under ``train``. Claims and figures see those runs as ``from:STRATEGY``."""

    source: str
    module: str
    strategies: list[str] = Field(min_length=1)
    train: str = "e2e"


class Figure(_Strict):
    """A figure an experiment asks for besides the standard ones.

    ``against``: the output metric against a number (``x``), one line per series, each
    mapping x values to strategies (e.g. accuracy against ensemble size M). ``bars``: the
    output metric per strategy, and the linear probe of ``probe`` ports beside it."""

    kind: str = Field(pattern="^(against|bars)$")
    title: str
    caption: str = ""
    at: dict[str, Any] = {}
    x: str = ""
    series: dict[str, dict[str, str]] = {}
    strategies: list[str] = []
    probe: str = ""


class Profile(_Strict):
    knobs: dict[str, Any] | None = None
    grid: dict[str, list[Any]] | None = None
    strategies: list[str] | None = None
    seeds: int | None = Field(None, ge=1, le=MAX_SEEDS)
    budget: int | None = Field(None, ge=1, le=MAX_BUDGET)
    training: Training | None = None
    expected_minutes: float | None = None
    snr: SNRSpec | None = None
    variants: list[Variant] | None = None
    undecided: dict[str, str] | None = None


# an experiment's name names its output folder (results/NAME): one path component
SAFE_NAME = r"^\w[\w.+-]{0,127}$"
NAME_RULE = (
    "an experiment's name names its output folder, so it is one path component: letters, "
    "digits and . _ + - (no / and no leading .), at most 128 characters"
)


class Experiment(_Strict):
    name: str = Field(pattern=SAFE_NAME)
    description: str = ""
    task: str
    sweep: str | None = (
        None  # the complexity knob on the figures' x-axis (default: first grid knob)
    )
    knobs: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    strategies: list[str] = Field(min_length=1)
    seeds: int = Field(3, ge=1, le=MAX_SEEDS)
    budget: int | None = Field(None, ge=1, le=MAX_BUDGET)
    training: Training = Training()
    expected_minutes: float | None = None
    snr: SNRSpec | None = None
    variants: list[Variant] = []
    # modules every run keeps in the store ("*": all), e.g. for another experiment to reuse
    save_modules: list[str] = []
    transfer: Transfer | None = None
    figures: list[Figure] = []
    profiles: dict[str, Profile] = {}
    claims: list[ClaimSpec] = []
    # claim id -> why this experiment (in practice: a profile) cannot decide it, e.g. too
    # few seeds for a verdict near its bound; the verdict is still computed and shown,
    # with this said beside it
    undecided: dict[str, str] = {}

    def with_profile(self, profile: str | None) -> Experiment:
        """This experiment with a profile's fields laid over it (None: the full profile)."""
        if profile is None:
            return self
        if profile not in self.profiles:
            listed = ", ".join(sorted(self.profiles)) or "(none)"
            raise E2ELabError(f"experiment {self.name} has no profile {profile!r}; has: {listed}")
        overrides = self.profiles[profile].model_dump(exclude_none=True)
        update = {k: getattr(self.profiles[profile], k) for k in overrides}
        if self.transfer is not None:  # the source runs under the same profile
            source = f"{self.transfer.source}-{profile}"
            update["transfer"] = self.transfer.model_copy(update={"source": source})
        return self.model_copy(update={**update, "name": f"{self.name}-{profile}"})

    def labelled(
        self, results: list[RunResult], sources: dict[str, list[str]] | None = None
    ) -> list[RunResult]:
        """The runs as claims and figures see them: a variant's run as strategy
        ``STRATEGY@LABEL`` at the grid point it extends, a transfer run as
        ``from:SOURCE`` (``sources``: source run id -> the labels of every source run
        whose module has the same weights, see ``source_labels``: two strategies that
        train the module alike, e.g. modular's and greedy's first phase, give one
        computation, read under both labels)."""
        out = []
        for result in results:
            spec = result.spec
            knobs = spec.knobs
            matching = [
                v
                for v in self.variants
                if all(_same(knobs.get(k), x) for k, x in v.knobs.items())
                and (v.budget is None or spec.settings.budget == v.budget)
            ]
            if matching:  # the most specific: {a, b} over {a} for a run that sets both
                variant = max(matching, key=lambda v: len(v.knobs) + (v.budget is not None))
                base = {k: self.knobs[k] for k in variant.knobs}
                strategy = f"{spec.strategy}@{variant.label}"
                spec = replace(spec, strategy=strategy, knobs={**knobs, **base})
            source = transfer_source(spec)
            if self.transfer is not None and source is not None:
                labels = (sources or {}).get(source) or [source[:8]]
                for index, label in enumerate(labels):
                    alias = result.id if index == 0 else f"{result.id}~{label}"
                    named = spec.relabelled(f"from:{label}")
                    out.append(replace(result, id=alias, spec=named))
                continue
            out.append(result if spec is result.spec else replace(result, spec=spec))
        return out

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values, merged over the fixed knobs."""
        names = list(self.grid)
        combos = itertools.product(*(self.grid[n] for n in names)) if names else [()]
        return [{**self.knobs, **dict(zip(names, values, strict=True))} for values in combos]

    def overrides(self) -> dict[str, Any]:
        """The training settings this experiment sets (over the task's defaults)."""
        extra = {"save_modules": ",".join(self.save_modules)} if self.save_modules else {}
        return {"budget": self.budget, **self.training.model_dump(exclude_none=True), **extra}

    def variant_points(self) -> list[tuple[Variant, dict[str, Any]]]:
        """Every variant at every grid point: (variant, its knobs)."""
        return [(v, {**k, **v.knobs}) for v in self.variants for k in self.grid_points()]


def source_runs(experiment: Experiment, store: Any) -> dict[tuple[str, int], str]:
    """(source label, seed) -> the source run's id, for runs that saved the module."""
    transfer = experiment.transfer
    assert transfer is not None
    stored = store.experiments()
    if transfer.source not in stored:
        raise E2ELabError(
            f"transfer.source: no experiment {transfer.source!r} in {store.path}; run it "
            "first (in a suite, list it before this one; under a profile, the source "
            "runs under the same profile and needs it too)"
        )
    source = validated(stored[transfer.source], f"{store.path}: experiment {transfer.source!r}")
    saved = store.saved_modules()
    found: dict[tuple[str, int], list[str]] = {}
    for result in source.labelled(store.results(transfer.source)):
        if result.status == "ok" and transfer.module in saved.get(result.id, []):
            key = (result.spec.strategy, result.spec.seed)
            found.setdefault(key, []).append(result.id)
    for (label, seed), ids in found.items():
        if len(ids) > 1 and label in transfer.strategies:
            raise E2ELabError(
                f"transfer: {label!r} seed {seed} names {len(ids)} runs of "
                f"{transfer.source} (it has several grid points); give the source one grid "
                "point per strategy, or a variant per extra point"
            )
    return {key: ids[0] for key, ids in found.items()}


def source_labels(experiment: Experiment, store: Any) -> dict[str, list[str]]:
    """Source run id -> the labels of every source run whose module has the same
    weights (SHA-256), for reading ``experiment``'s transfer runs."""
    if experiment.transfer is None or experiment.transfer.source not in store.experiments():
        return {}
    module = experiment.transfer.module
    runs = source_runs(experiment, store)
    weights = {run_id: store.module_sha256(run_id, module) for run_id in runs.values()}
    by_weights: dict[Any, list[str]] = {}
    listed = set(experiment.transfer.strategies)
    runs = {key: run_id for key, run_id in runs.items() if key[0] in listed}
    for (label, _), run_id in runs.items():
        by_weights.setdefault(weights[run_id] or run_id, []).append(label)
    return {run_id: by_weights[weights[run_id] or run_id] for run_id in runs.values()}


def _same(a: Any, b: Any) -> bool:
    return a == b or str(a).lower() == str(b).lower()


def transfer_source(spec: RunSpec) -> str | None:
    """The id of the run whose module a run loaded (None if it loaded none from a run)."""
    text = spec.settings.load_from
    if "#" not in text:
        return None
    return text.rpartition("#")[2].split(",")[0] or None


def _where(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def _hint(error: dict[str, Any]) -> str:
    """How to fix one validation error, pointing to a shipped file that has the field."""
    names = [part for part in error["loc"] if isinstance(part, str)]
    if error["type"] == "extra_forbidden" and len(names) == 1 and names[0] in Training.model_fields:
        example = _example(["training", names[0]])
        return f"'{names[0]}' is a training setting: put it under training: ({example})"
    if error["type"] == "extra_forbidden":
        return f"remove it, or check its spelling ({_example(names[:-1])})"
    return f"fix that field ({_example(names)})"


def _example(path: list[str]) -> str:
    """'see experiments/NAME.yaml' for the first shipped file that has ``path`` (keys,
    list items skipped), or the reference file where none has it."""
    for name, file in shipped().items():
        try:
            data: Any = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if _has(data, path):
            return f"see experiments/{name}.yaml for one that has it"
    return "see experiments/glasmachers.yaml for a valid file"


def _has(data: Any, path: list[str]) -> bool:
    if not path:
        return True
    if isinstance(data, list):
        return any(_has(item, path) for item in data)
    if isinstance(data, dict) and path[0] in data:
        return _has(data[path[0]], path[1:])
    if isinstance(data, dict):  # a mapping of names (profiles: {quick: ...}) in between
        return any(_has(v, path) for v in data.values() if isinstance(v, dict))
    return False


def parse(data: Any, source: str) -> Experiment:
    """Validate an experiment given as a mapping (e.g. loaded from YAML)."""
    experiment = validated(data, source)
    for profile in [None, *experiment.profiles]:
        _check_semantics(experiment.with_profile(profile), source, profile)
    return experiment


def validated(data: Any, source: str) -> Experiment:
    """An experiment's fields checked (not what needs its task: see ``parse``), e.g. a
    definition read back from a store; one line naming the field if one is wrong."""
    if not isinstance(data, dict):
        raise E2ELabError(f"{source}: expected a mapping of fields at the top level")
    try:
        return Experiment.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        if first["loc"] == ("name",) and first["type"] == "string_pattern_mismatch":
            first = {**first, "msg": NAME_RULE}
        raise E2ELabError(
            f"{source}: field '{_where(first)}': {first['msg']}{more}; {_hint(first)}"
        ) from None


def _check_semantics(exp: Experiment, source: str, profile: str | None) -> None:
    # the training half, imported here only: reading a stored experiment needs no torch
    from e2elab import strategy as strategies
    from e2elab.tasks import task_class

    where = f"{source}" + (f" (profile {profile})" if profile else "")
    try:
        cls = task_class(exp.task)
    except E2ELabError as error:
        raise E2ELabError(f"{where}: field 'task': {error}") from None
    knobs = list(cls.knobs)

    def fail(field: str, problem: object) -> E2ELabError:
        return E2ELabError(f"{where}: field '{field}': {problem}")

    for name, values in exp.grid.items():
        if not values:
            raise fail(f"grid.{name}", "give at least one value")
    if exp.sweep is not None and exp.sweep not in knobs:
        raise fail("sweep", f"{exp.sweep!r} is not a knob of task {exp.task}: {knobs}")
    try:
        for knobs_at in exp.grid_points():
            cls.resolve_knobs(knobs_at)
    except E2ELabError as error:
        raise fail("knobs" if not exp.grid else "grid", error) from None
    try:
        settings = cls.defaults.override(**exp.overrides()).validate()
    except E2ELabError as error:
        raise fail("training", error) from None
    # an optional dataset that is missing here: the part is skipped when run, not refused
    task = None if cls.unavailable(exp.grid_points()[0]) else cls(**exp.grid_points()[0])
    if task is not None:
        _check_threshold(task, settings.threshold, fail, "training.threshold")
    _check_variants(exp, cls, fail)
    if exp.transfer is not None:
        try:
            strategies.parse_strategy(exp.transfer.train)
        except E2ELabError as error:
            raise fail("transfer.train", error) from None
    for i, figure in enumerate(exp.figures):
        for knob in figure.at:
            if knob not in knobs:
                raise fail(f"figures.{i}.at", f"{knob!r} is not a knob of task {exp.task}: {knobs}")
        if figure.kind == "against" and not figure.series:
            raise fail(
                f"figures.{i}.series", "an 'against' figure needs series: {name: {x: strategy}}"
            )
        if figure.kind == "bars" and not figure.strategies:
            raise fail(f"figures.{i}.strategies", "a 'bars' figure needs strategies")
        for name, points in figure.series.items():
            for x in points:
                try:
                    number = float(x)
                except ValueError:
                    number = math.nan
                if not 0 < number < math.inf:  # drawn on a log axis
                    raise fail(
                        f"figures.{i}.series.{name}",
                        f"x value {x!r} is not a positive finite number",
                    )
    titles = [f.title for f in exp.figures]
    if len(set(titles)) != len(titles):
        raise fail("figures", "two figures share a title (their file name); give each its own")
    if any(not name.strip() for name in exp.save_modules):
        raise fail("save_modules", "an empty module name; list module names, or '*'")
    for field, texts in (
        ("strategies", exp.strategies),
        ("snr.strategies", _snr(exp)),
        *((f"variants.{i}.strategies", v.strategies) for i, v in enumerate(exp.variants)),
    ):
        for text in texts:
            try:
                strategies.parse_strategy(text)
            except E2ELabError as error:
                raise fail(field, error) from None
    if exp.snr is not None and isinstance(exp.snr.exact, list):
        unknown = [s for s in exp.snr.exact if s not in exp.snr.strategies]
        if unknown:
            raise fail(
                "snr.exact",
                f"{unknown[0]!r} is not one of snr.strategies: {', '.join(exp.snr.strategies)}",
            )
    for i, claim in enumerate(exp.claims):
        if claim.check not in CHECKS:
            listed = ", ".join(sorted(CHECKS))
            raise fail(
                f"claims.{i}.check", f"unknown check {claim.check!r}; choose one of: {listed}"
            )
        try:
            check_params(claim.check, claim.params, knobs)
        except ValueError as error:
            raise fail(f"claims.{i}.params", error) from None
        ids = [c.id for c in exp.claims]
        for target in claim.explains:
            if target not in ids or target == claim.id:
                raise fail(
                    f"claims.{i}.explains",
                    f"{target!r} is not the id of another claim here; ids: {', '.join(ids)}",
                )
        threshold = claim.params.get("threshold")
        if isinstance(threshold, (int, float)) and task is not None:
            _check_threshold(task, threshold, fail, f"claims.{i}.params.threshold")
    ids = {c.id for c in exp.claims}
    for claim_id, why in exp.undecided.items():
        if claim_id not in ids:
            raise fail("undecided", f"{claim_id!r} is not the id of a claim here")
        if not why.strip():
            raise fail(f"undecided.{claim_id}", "say why this profile cannot decide it")


def _check_variants(exp: Experiment, cls: Any, fail: Any) -> None:
    """A variant sets fixed knobs (given in ``knobs:``, the value every other run has) to
    other values; no two variants set the same values, nor share a label."""
    seen: dict[str, str] = {}
    for i, variant in enumerate(exp.variants):
        if not variant.knobs and variant.budget is None:
            raise fail(f"variants.{i}", "a variant sets knobs:, budget: or both")
        if variant.budget is not None and variant.budget == exp.budget:
            raise fail(f"variants.{i}.budget", f"{variant.budget} is the experiment's budget")
        if variant.budget is not None and exp.budget is None:
            raise fail(f"variants.{i}.budget", "give the experiment a budget: too, to compare with")
        for knob, value in variant.knobs.items():
            if knob not in cls.knobs:
                raise fail(f"variants.{i}.knobs", f"{knob!r} is not a knob of task {exp.task}")
            if knob in exp.grid:
                raise fail(
                    f"variants.{i}.knobs",
                    f"{knob!r} is swept by the grid; a variant sets fixed knobs only",
                )
            if knob not in exp.knobs:
                raise fail(
                    f"variants.{i}.knobs",
                    f"give {knob!r} in knobs: too (the value the other runs use), so that "
                    "the variant's runs can be compared with theirs",
                )
            if _same(exp.knobs[knob], value):
                raise fail(f"variants.{i}.knobs", f"{knob}={value!r} is the value knobs: gives")
        key = json.dumps([variant.knobs, variant.budget], sort_keys=True, default=str)
        if key in seen or variant.label in seen.values():
            raise fail(f"variants.{i}", "two variants set the same knobs or share a label")
        seen[key] = variant.label
        try:
            for _, knobs_at in exp.variant_points():
                cls.resolve_knobs(knobs_at)
        except E2ELabError as error:
            raise fail(f"variants.{i}.knobs", error) from None


def _snr(exp: Experiment) -> list[str]:
    return exp.snr.strategies if exp.snr else []


def _check_threshold(task: Any, threshold: float, fail: Any, field: str) -> None:
    """A threshold on a success rate (accuracy) lies in [0, 1]."""
    output = task.ports.get(task.output)
    if output is not None and output.accuracy_like and not 0.0 <= threshold <= 1.0:
        raise fail(field, f"an accuracy threshold lies in [0, 1], got {threshold}")


def load(name_or_path: str | Path) -> Experiment:
    """Load a shipped experiment by name (``glasmachers``) or a YAML file by path."""
    path = resolve_path(name_or_path)
    data = _read_yaml(path)
    if isinstance(data, dict) and "suite" in data:
        raise E2ELabError(f"{path} is a suite of experiments; load it with load_all")
    return parse(data, str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (plain YAML
    keeps the last one without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise E2ELabError(
            f"{path}: {size:,} bytes; an experiment file may have at most {MAX_FILE_BYTES:,}"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise E2ELabError(
            f"{path}: not UTF-8 text (byte {error.start}); save the file as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None)
        why = f" ({problem})" if problem else ""
        raise E2ELabError(f"{path}: not valid YAML{at}{why}; fix the syntax") from None
    except RecursionError:
        raise E2ELabError(f"{path}: nested too deeply to be an experiment; fix the file") from None
    if expanded_size(data) > MAX_EXPANDED_VALUES:
        raise E2ELabError(
            f"{path}: its YAML aliases (*name) expand to more than {MAX_EXPANDED_VALUES:,} "
            "values; write the values out, or alias less"
        )
    return data


def expanded_size(data: Any, limit: int = MAX_EXPANDED_VALUES) -> int:
    """How many values ``data`` holds with every shared (aliased) part counted each time it
    is used, computed without expanding anything; more than ``limit`` (or a part that
    holds itself) counts as ``limit + 1``."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in open_:  # a list or mapping that holds itself: endless once expanded
            return limit + 1
        open_.add(key)
        children = value.items() if isinstance(value, dict) else enumerate(value)
        total = 1
        for name, child in children:
            total += size(name) + size(child)
            if total > limit:
                break
        open_.discard(key)
        sizes[key] = min(total, limit + 1)
        return sizes[key]

    try:
        return size(data)
    except RecursionError:
        return limit + 1


class Suite(_Strict):
    """A file that names several experiments, run and reported together."""

    name: str = Field(pattern=SAFE_NAME)
    description: str = ""
    suite: list[str] = Field(min_length=1)


def load_all(name_or_path: str | Path) -> tuple[str, list[Experiment]]:
    """Load an experiment, or every experiment of a suite file (parts are resolved as
    shipped names, or as paths relative to the suite file). Returns (name, parts)."""
    path = resolve_path(name_or_path)
    data = _read_yaml(path)
    if not (isinstance(data, dict) and "suite" in data):
        experiment = parse(data, str(path))
        return experiment.name, [experiment]
    try:
        suite = Suite.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        raise E2ELabError(f"{path}: field '{_where(first)}': {first['msg']}") from None
    parts = []
    for part in suite.suite:
        local = path.parent / part
        try:
            found = local if local.suffix in {".yaml", ".yml"} and local.exists() else part
            parts.append(load(found))
        except E2ELabError as error:
            raise E2ELabError(f"{path}: field 'suite': part {part!r}: {error}") from None
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise E2ELabError(f"{path}: the suite names one experiment twice; list each once")
    return suite.name, parts


def shipped() -> dict[str, Path]:
    """Experiments that ship with e2elab: name -> path."""
    folder = resources.files("e2elab") / "experiments"
    found = {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}
    return dict(sorted(found.items()))


def resolve_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.exists():
            raise E2ELabError(f"experiment file {path} does not exist")
        return path
    known = shipped()
    if str(name_or_path) not in known:
        raise E2ELabError(
            f"unknown experiment {str(name_or_path)!r}; choose one of: "
            f"{', '.join(known) or '(none)'} or give a path to a .yaml file"
        )
    return known[str(name_or_path)]


def digest_name(prefix: str, task: str, definition: dict[str, Any]) -> str:
    """``PREFIX-TASK-HASH``: an experiment's name for a command's flags (the same flags
    give the same name, so a second command adds to the first one's runs); the task's
    name made one safe path component."""
    text = json.dumps(definition, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    safe = re.sub(r"[^\w.+-]", ".", task)[:80]
    return f"{prefix}-{safe}-{digest}"
