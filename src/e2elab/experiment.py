"""Experiments: a YAML file naming a grid of runs and the claims to check on them.

A file holds the task (a shipped name, ``module:Class`` or a published entry point),
fixed knobs, a grid of swept knobs (every combination runs), the strategies, the number
of seeds, the budget, optional training overrides, named profiles (``quick``) that
override any of those fields, and the claims. It is validated on load; each error names
the file, the field and the fix. Nothing here needs torch: reading a stored experiment
back (for a report) must not load the training code.
"""

from __future__ import annotations

import inspect
import itertools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from e2elab.claims import CHECKS
from e2elab.errors import E2ELabError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Training(_Strict):
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    threshold: float | None = None
    evaluations: int | None = Field(None, ge=1)
    optimizer: str | None = None


class ClaimSpec(_Strict):
    id: str
    check: str
    statement: str
    params: dict[str, Any] = {}


class SNRSpec(_Strict):
    """Gradient signal-to-noise to measure at every grid point (see diagnostics.snr)."""

    strategies: list[str] = Field(["e2e", "hinted"], min_length=1)
    inits: int = Field(3, ge=2)
    batches: int = Field(20, ge=3)
    batch_size: int | None = Field(None, ge=1)


class Profile(_Strict):
    knobs: dict[str, Any] | None = None
    grid: dict[str, list[Any]] | None = None
    strategies: list[str] | None = None
    seeds: int | None = Field(None, ge=1)
    budget: int | None = Field(None, ge=1)
    training: Training | None = None
    expected_minutes: float | None = None
    snr: SNRSpec | None = None


class Experiment(_Strict):
    name: str
    description: str = ""
    task: str
    sweep: str | None = (
        None  # the complexity knob on the figures' x-axis (default: first grid knob)
    )
    knobs: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    strategies: list[str] = Field(min_length=1)
    seeds: int = Field(3, ge=1)
    budget: int | None = Field(None, ge=1)
    training: Training = Training()
    expected_minutes: float | None = None
    snr: SNRSpec | None = None
    profiles: dict[str, Profile] = {}
    claims: list[ClaimSpec] = []

    def with_profile(self, profile: str | None) -> Experiment:
        """This experiment with a profile's fields laid over it (None: the full profile)."""
        if profile is None:
            return self
        if profile not in self.profiles:
            listed = ", ".join(sorted(self.profiles)) or "(none)"
            raise E2ELabError(f"experiment {self.name} has no profile {profile!r}; has: {listed}")
        overrides = self.profiles[profile].model_dump(exclude_none=True)
        update = {k: getattr(self.profiles[profile], k) for k in overrides}
        return self.model_copy(update={**update, "name": f"{self.name}-{profile}"})

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values, merged over the fixed knobs."""
        names = list(self.grid)
        combos = itertools.product(*(self.grid[n] for n in names)) if names else [()]
        return [{**self.knobs, **dict(zip(names, values, strict=True))} for values in combos]

    def overrides(self) -> dict[str, Any]:
        """The training settings this experiment sets (over the task's defaults)."""
        return {"budget": self.budget, **self.training.model_dump(exclude_none=True)}


def _where(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def parse(data: Any, source: str) -> Experiment:
    """Validate an experiment given as a mapping (e.g. loaded from YAML)."""
    if not isinstance(data, dict):
        raise E2ELabError(f"{source}: expected a mapping of fields at the top level")
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise E2ELabError(
            f"{source}: field '{_where(first)}': {first['msg']}{more}; "
            "fix that field (see experiments/glasmachers.yaml for a valid file)"
        ) from None
    for profile in [None, *experiment.profiles]:
        _check_semantics(experiment.with_profile(profile), source, profile)
    return experiment


def _check_semantics(exp: Experiment, source: str, profile: str | None) -> None:
    # the training half, imported here only: reading a stored experiment needs no torch
    from e2elab import strategy as strategies
    from e2elab.tasks import task_class

    where = f"{source}" + (f" (profile {profile})" if profile else "")
    try:
        cls = task_class(exp.task)
        for name, values in exp.grid.items():
            if not values:
                raise E2ELabError(f"field 'grid.{name}': give at least one value")
        for knobs in exp.grid_points():
            cls.resolve_knobs(knobs)
        for text in exp.strategies + (exp.snr.strategies if exp.snr else []):
            strategies.parse_strategy(text)
    except E2ELabError as error:
        raise E2ELabError(f"{where}: {error}") from None
    for i, claim in enumerate(exp.claims):
        if claim.check not in CHECKS:
            listed = ", ".join(sorted(CHECKS))
            raise E2ELabError(
                f"{where}: field 'claims.{i}.check': unknown check {claim.check!r}; "
                f"choose one of: {listed}"
            )
        accepted = set(inspect.signature(CHECKS[claim.check]).parameters) - {"results", "snr"}
        unknown = set(claim.params) - accepted
        if unknown:
            raise E2ELabError(
                f"{where}: field 'claims.{i}.params': {claim.check} takes no "
                f"{', '.join(sorted(unknown))}; it accepts: {', '.join(sorted(accepted))}"
            )


def load(name_or_path: str | Path) -> Experiment:
    """Load a shipped experiment by name (``glasmachers``) or a YAML file by path."""
    path = resolve_path(name_or_path)
    data = _read_yaml(path)
    if isinstance(data, dict) and "suite" in data:
        raise E2ELabError(f"{path} is a suite of experiments; load it with load_all")
    return parse(data, str(path))


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise E2ELabError(f"{path}: not valid YAML{at}; fix the syntax") from None


class Suite(_Strict):
    """A file that names several experiments, run and reported together."""

    name: str
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
        parts.append(load(local if local.suffix in {".yaml", ".yml"} and local.exists() else part))
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
