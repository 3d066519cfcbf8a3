"""Strategies are data: a list of phases, built by small named functions.

A phase names the modules that train, the port losses that count (with weights), the
ports that are cut, the ports fed from ground truth (teacher forcing), and its share of
the budget. A strategy is built from the traced ``Graph`` of a system and the name of
its output port, so one definition serves every task. A new strategy is a new function
that returns a ``Strategy``; the training loop never branches on a strategy's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from e2elab.errors import E2ELabError, choices
from e2elab.system import Graph

AUX_PREFIX = "aux:"


def aux_loss(module: str) -> str:
    """The loss key of the auxiliary head that reads ``module``'s ports (see ``local``)."""
    return AUX_PREFIX + module


@dataclass(frozen=True)
class Phase:
    """One stage of training.

    Parameters
    ----------
    train:
        Modules whose parameters the optimizer updates; every other module is frozen
        (``requires_grad_(False)`` and left out of the optimizer).
    losses:
        Port name -> weight. A key ``"aux:MODULE"`` is the loss of a small auxiliary head
        that predicts the final target from MODULE's ports.
    cut:
        Ports detached on their way downstream: no gradient flows back through them.
    teacher_forced:
        Ports whose downstream value is their target instead of the module's output.
    share:
        Fraction of the run's training-example budget spent in this phase.
    lr_scale:
        The phase's learning rate is the run's times this (e.g. a gentler fine-tuning).
    """

    train: frozenset[str]
    losses: Mapping[str, float]
    cut: frozenset[str] = frozenset()
    teacher_forced: frozenset[str] = frozenset()
    share: float = 1.0
    label: str = ""
    lr_scale: float = 1.0


@dataclass(frozen=True)
class Strategy:
    """A training schedule: phases run in order; ``members`` > 1 trains an ensemble."""

    name: str
    phases: tuple[Phase, ...]
    members: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)
    # "shared": the members split the run's budget of examples; "each": every member
    # draws the whole budget (the run draws members x budget; matched in FLOPs, not data)
    member_budget: str = "shared"
    blackbox: str | None = None  # a scikit-learn learner on raw inputs instead of the system

    def __post_init__(self) -> None:
        if self.blackbox is not None:
            return
        total = sum(p.share for p in self.phases)
        if not self.phases or abs(total - 1.0) > 1e-9:
            raise E2ELabError(
                f"strategy {self.name}: phase shares must sum to 1, got {total:.6g}; rescale them"
            )


Builder = Callable[..., Strategy]


def _all_modules(graph: Graph) -> frozenset[str]:
    return frozenset(graph.modules)


def _own_ports(graph: Graph, module: str) -> dict[str, float]:
    ports = graph.ports_of(module)
    if not ports:
        raise E2ELabError(
            f"module {module!r} produces no port with a target, so it cannot be trained on "
            "its own; emit its output with self.port(name, value) and give that port a target"
        )
    for port in ports:
        shared = graph.producer_of(port) - {module}
        if shared:
            raise E2ELabError(
                f"port {port!r} depends on modules {', '.join(sorted({module, *shared}))} "
                "with no port between them (or sharing parameters), so a strategy that "
                "trains modules apart would "
                f"train each alone on it; emit the upstream module's output as a port with "
                "a target, or use e2e or hinted"
            )
    return {p: 1.0 for p in ports}


def _module_phases(graph: Graph, modules: list[str], share: float, forced: bool) -> list[Phase]:
    """One phase per module, each on its own targets; inputs forced or from frozen upstream."""
    everything = frozenset(graph.ports)
    each = share / len(modules)
    return [
        Phase(
            train=frozenset({m}),
            losses=_own_ports(graph, m),
            cut=everything,
            teacher_forced=everything if forced else frozenset(),
            share=each,
            label=f"{'modular' if forced else 'greedy'}:{m}",
        )
        for m in modules
    ]


def e2e(graph: Graph, output: str) -> Strategy:
    """End-to-end: every module trains on the final loss alone."""
    phase = Phase(train=_all_modules(graph), losses={output: 1.0}, label="e2e")
    return Strategy("e2e", (phase,))


def hinted(graph: Graph, output: str, weight: float = 1.0) -> Strategy:
    """Decomposition / intermediate supervision: one joint phase, final loss plus hints."""
    if weight < 0:
        raise E2ELabError(f"hinted: weight must be >= 0, got {weight}")
    losses = {p: (1.0 if p == output else weight) for p in graph.ports}
    phase = Phase(train=_all_modules(graph), losses=losses, label="hinted")
    return Strategy("hinted", (phase,), params={"weight": weight})


def modular(graph: Graph, output: str) -> Strategy:
    """Each module alone on its own target with teacher-forced inputs; composed as is."""
    for module in graph.modules:
        upstream = graph.unforceable(module)
        if upstream:
            raise E2ELabError(
                f"modular: module {module!r} reads {', '.join(sorted(upstream))} through a "
                "value that is not a port with a target (e.g. a feature vector), so its "
                "input cannot be teacher-forced; use greedy (upstream modules trained "
                "first and frozen), or give that value a target"
            )
    return Strategy("modular", tuple(_module_phases(graph, list(graph.modules), 1.0, True)))


def _forceable(graph: Graph) -> bool:
    """Every module's inputs from other modules pass through ports with targets."""
    return not any(graph.unforceable(m) for m in graph.modules)


def greedy(graph: Graph, output: str) -> Strategy:
    """Modules in data-flow order, each on its own target, fed by frozen upstream outputs."""
    return Strategy("greedy", tuple(_module_phases(graph, list(graph.modules), 1.0, False)))


def pretrain_finetune(
    graph: Graph, output: str, pretrain_share: float = 0.5, finetune_lr_scale: float = 1.0
) -> Strategy:
    """Modular pre-training, then an end-to-end phase on the final loss, at the run's
    learning rate times ``finetune_lr_scale``."""
    if not 0 < pretrain_share < 1:
        raise E2ELabError(
            f"pretrain_finetune: pretrain_share must be in (0, 1), got {pretrain_share}"
        )
    if not 0 < finetune_lr_scale <= 1000 or math.isnan(finetune_lr_scale):
        raise E2ELabError(
            f"pretrain_finetune: finetune_lr_scale must be in (0, 1000], got {finetune_lr_scale}"
        )
    # where an input cannot be forced (plumbing), the pre-training is greedy's
    phases = _module_phases(graph, list(graph.modules), pretrain_share, _forceable(graph))
    finetune = Phase(
        train=_all_modules(graph),
        losses={output: 1.0},
        share=1.0 - pretrain_share,
        label="finetune",
        lr_scale=finetune_lr_scale,
    )
    params = {"pretrain_share": pretrain_share, "finetune_lr_scale": finetune_lr_scale}
    return Strategy("pretrain_finetune", (*phases, finetune), params=params)


def frozen_others(graph: Graph, output: str, module: str, pretrain_share: float = 0.5) -> Strategy:
    """All other modules pre-trained on their targets and frozen; ``module`` learns from the
    final loss alone, starting from its random initialisation."""
    if module not in graph.modules:
        raise choices("module for frozen_others:", module, list(graph.modules))
    others = [m for m in graph.modules if m != module]
    phases = _module_phases(graph, others, pretrain_share, True) if others else []
    last = Phase(
        train=frozenset({module}),
        losses={output: 1.0},
        share=1.0 - pretrain_share if others else 1.0,
        label=f"final-loss:{module}",
    )
    return Strategy("frozen_others", (*phases, last), params={"module": module})


def local(graph: Graph, output: str) -> Strategy:
    """Decoupled greedy learning (Belilovsky et al.): each module trains on an auxiliary
    head that predicts the final target from its own ports; every inter-module port is cut."""
    makers = graph.producer_of(output)
    losses: dict[str, float] = {output: 1.0}
    for m in graph.modules:
        if m not in makers:
            if not graph.ports_of(m):
                raise E2ELabError(
                    f"local: module {m!r} produces no port with a target, so no auxiliary "
                    "head can read it; emit its output with self.port(name, value) and give "
                    "that port a target"
                )
            losses[aux_loss(m)] = 1.0
    cut = frozenset(p for p in graph.ports if p != output)
    phase = Phase(train=_all_modules(graph), losses=losses, cut=cut, label="local")
    return Strategy("local", (phase,))


MEMBER_STRATEGIES = ("e2e", "hinted", "modular", "greedy", "pretrain_finetune", "local")


def ensemble(
    graph: Graph, output: str, members: int = 3, of: str = "e2e", budget: str = "shared"
) -> Strategy:
    """``members`` independently trained systems (each under strategy ``of``, from its
    own initialisation and data), outputs averaged. ``budget=shared`` (the default): the
    members split the run's budget of examples; ``budget=each``: every member draws the
    whole budget, so the run draws ``members`` times as many examples."""
    if not 1 <= members <= 1000:
        raise E2ELabError(f"ensemble: members must be in 1..1000, got {members}")
    if of not in MEMBER_STRATEGIES:
        raise choices("strategy for ensemble members (of=)", of, list(MEMBER_STRATEGIES))
    if budget not in ("shared", "each"):
        raise choices("budget for ensemble:", budget, ["shared", "each"])
    base = STRATEGIES[of].builder(graph, output)
    phases = tuple(replace(p, label=f"{p.label}-member") for p in base.phases)
    params: dict[str, Any] = {"members": members, **({"of": of} if of != "e2e" else {})}
    params |= {"budget": budget} if budget != "shared" else {}
    return Strategy("ensemble", phases, members=members, params=params, member_budget=budget)


def blackbox(
    graph: Graph, output: str, model: str = "random_forest", features: str = ""
) -> Strategy:
    """Not the system at all: a scikit-learn learner (random_forest, svm, mlp, logreg,
    linear_svm, ...) fitted on the raw inputs flattened, or with ``features`` on
    hand-crafted image features (hog, edges, gabor: the classic pipeline), with the same
    budget of training examples."""
    from e2elab.baselines import MODELS
    from e2elab.features import FAMILIES

    if model not in MODELS:
        raise choices("model for blackbox:", model, list(MODELS))
    if features and features not in FAMILIES:
        raise choices("features for blackbox:", features, list(FAMILIES))
    params = {"model": model, **({"features": features} if features else {})}
    return Strategy("blackbox", (), params=params, blackbox=model)


@dataclass(frozen=True)
class StrategyInfo:
    builder: Builder
    params: Mapping[str, type]
    defaults: Mapping[str, Any]
    help: str
    # how the run's budget of training examples is spent, phase by phase
    schedule: str = "one phase: the whole budget"


STRATEGIES: dict[str, StrategyInfo] = {
    "e2e": StrategyInfo(e2e, {}, {}, "one phase, final loss only"),
    "hinted": StrategyInfo(
        hinted, {"weight": float}, {"weight": 1.0}, "final loss + weighted intermediate losses"
    ),
    "modular": StrategyInfo(
        modular,
        {},
        {},
        "each module alone on its target, inputs forced",
        "one phase per module, in data-flow order, equal shares (3 modules: thirds); "
        "examples-to-threshold counts the earlier phases",
    ),
    "greedy": StrategyInfo(
        greedy,
        {},
        {},
        "modules in flow order, fed by frozen upstream",
        "one phase per module, in data-flow order, equal shares; examples-to-threshold "
        "counts the earlier phases",
    ),
    "pretrain_finetune": StrategyInfo(
        pretrain_finetune,
        {"pretrain_share": float, "finetune_lr_scale": float},
        {"pretrain_share": 0.5, "finetune_lr_scale": 1.0},
        "modular, then end-to-end fine-tuning (at FINETUNE_LR_SCALE x the learning rate)",
        "PRETRAIN_SHARE (0.5) modular, its modules' phases in equal parts, then the rest "
        "end-to-end",
    ),
    "frozen_others": StrategyInfo(
        frozen_others,
        {"module": str, "pretrain_share": float},
        {"pretrain_share": 0.5},
        "others pre-trained and frozen; MODULE learns from the final loss alone "
        "(one per module if unset)",
        "PRETRAIN_SHARE (0.5) pre-training the others (equal parts), then the rest on MODULE alone",
    ),
    "local": StrategyInfo(local, {}, {}, "DGL: per-module auxiliary heads, all ports cut"),
    "ensemble": StrategyInfo(
        ensemble,
        {"members": int, "of": str, "budget": str},
        {"members": 3, "of": "e2e", "budget": "shared"},
        "MEMBERS independent systems trained under OF (default e2e), outputs averaged; "
        "they share the budget of examples (budget=each: each draws all of it)",
        "OF's phases; the members take turns batch by batch and split the budget (each: "
        "MEMBERS x the budget)",
    ),
    "blackbox": StrategyInfo(
        blackbox,
        {"model": str, "features": str},
        {"model": "random_forest"},
        "baseline: a scikit-learn learner on the raw inputs (or on hand-crafted FEATURES), "
        "no modules",
        "no training loop: fitted on BUDGET examples at once",
    ),
}


# parameters every strategy takes, applied to its phases after it is built
COMMON: dict[str, type] = {"force": list, "freeze": list}
COMMON_HELP = (
    "every strategy also takes force=PORT[,PORT...]: those ports are teacher-forced in every "
    "phase (downstream modules see the target); a name may be a pattern (digit_[2-9]); and "
    "freeze=MODULE[,...]: those modules never train (e.g. a module loaded with --load); "
    "phases left with nothing to train are dropped and the others share their budget"
)


def _params_of(name: str) -> dict[str, type]:
    return {**STRATEGIES[name].params, **COMMON}


def parse_strategy(text: str) -> tuple[str, dict[str, Any]]:
    """Parse ``"name"`` or ``"name:key=value,key=value"`` into a name and typed params.

    A list-valued parameter (``force``) takes every following item without ``=``:
    ``frozen_others:module=recognizer,force=digit_2,digit_3``."""
    name, _, rest = text.strip().partition(":")
    if name not in STRATEGIES:
        raise choices("strategy", name, list(STRATEGIES))
    types = _params_of(name)
    params: dict[str, Any] = {}
    last: str | None = None
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq:
            if last is not None and types[last] is list:
                params[last].append(item)
                continue
            raise E2ELabError(f"strategy {name}: expected key=value, got {item!r}")
        if key not in types:
            raise choices(f"parameter of strategy {name}:", key, list(types))
        if key in params:
            raise E2ELabError(f"strategy {name}: {key} is given twice; give it once")
        last = key
        if types[key] is list:
            params[key] = [raw] if raw else []
            continue
        try:
            params[key] = types[key](raw)
        except ValueError:
            kind = types[key].__name__
            raise E2ELabError(f"strategy {name}: {key} expects {kind}, got {raw!r}") from None
    for key, value in params.items():
        if types[key] is list:
            if not value:
                raise E2ELabError(
                    f"strategy {name}: {key} needs at least one "
                    + ("port" if key == "force" else "module")
                    + " name"
                )
            params[key] = sorted(set(value))
    return name, params


def format_strategy(name: str, params: Mapping[str, Any]) -> str:
    """The inverse of ``parse_strategy`` (params sorted by key)."""
    if not params:
        return name

    def shown(value: Any) -> str:
        return ",".join(value) if isinstance(value, list) else str(value)

    return name + ":" + ",".join(f"{k}={shown(params[k])}" for k in sorted(params))


def expand(text: str, modules: list[str]) -> list[str]:
    """Expand a strategy that needs a module (``frozen_others``) to one per module."""
    name, params = parse_strategy(text)
    if name == "frozen_others" and "module" not in params:
        return [format_strategy(name, {**params, "module": m}) for m in modules]
    return [format_strategy(name, params)]


def build(text: str, graph: Graph, output: str) -> Strategy:
    """Build the strategy named by ``text`` (see ``parse_strategy``) for a traced system."""
    name, params = parse_strategy(text)
    info = STRATEGIES[name]
    if name == "frozen_others" and "module" not in params:
        raise E2ELabError(
            "frozen_others needs a module, e.g. frozen_others:module=recognizer; "
            f"modules are: {', '.join(graph.modules)}"
        )
    common = {k: params.pop(k) for k in list(params) if k in COMMON}
    if common and name == "blackbox":
        raise E2ELabError("blackbox has no modules or ports to force or freeze; drop them")
    built = info.builder(graph, output, **params)
    if "force" in common:
        built = _forcing(built, forced_ports(common["force"], graph))
        built = replace(built, params={**built.params, "force": common["force"]})
    if "freeze" in common:
        if name == "frozen_others" and params.get("module") in common["freeze"]:
            raise E2ELabError(
                f"frozen_others trains {params['module']} alone; freezing it too leaves "
                "that strategy nothing of its own: drop it from freeze="
            )
        built = _freezing(built, common["freeze"], graph)
    return built


def _freezing(built: Strategy, modules: list[str], graph: Graph) -> Strategy:
    """``built`` with ``modules`` trained in no phase; phases left with nothing to train
    are dropped and the rest keep their proportions of the budget."""
    for module in modules:
        if module not in graph.modules:
            raise choices("module to freeze:", module, list(graph.modules))
    frozen = frozenset(modules)
    kept = [replace(p, train=p.train - frozen) for p in built.phases if p.train - frozen]
    if not kept:
        raise E2ELabError(
            f"strategy {built.name}: freezing {', '.join(modules)} leaves no module to train; "
            "freeze fewer modules"
        )
    total = sum(p.share for p in kept)
    phases = tuple(
        replace(p, share=p.share / total, label=f"{p.label} (frozen: {','.join(modules)})")
        for p in kept
    )
    return replace(built, phases=phases, params={**built.params, "freeze": list(modules)})


def forced_ports(patterns: list[str], graph: Graph) -> frozenset[str]:
    """The ports that ``force`` names: a plain name must be a port of the system; a pattern
    (with ``*``, ``?`` or ``[...]``) may match none (e.g. ``digit_[2-9]`` at n = 1)."""
    found: set[str] = set()
    for pattern in patterns:
        if pattern.count("[") != pattern.count("]"):
            raise E2ELabError(
                f"force: {pattern!r} has an unbalanced bracket (a comma ends a port name, "
                "so a class cannot list several: use a range, e.g. digit_[2-9])"
            )
        if any(c in pattern for c in "*?["):
            found |= {p for p in graph.ports if fnmatchcase(p, pattern)}
        elif pattern in graph.ports:
            found.add(pattern)
        else:
            raise choices("port to force:", pattern, list(graph.ports))
    return frozenset(found)


def _forcing(built: Strategy, ports: frozenset[str]) -> Strategy:
    def forced(p: Phase) -> Phase:
        added = sorted(ports - p.teacher_forced)
        shown = ",".join(added) if added else "none new" if ports else "none"
        label = f"{p.label} (forced: {shown})"
        return replace(p, teacher_forced=p.teacher_forced | ports, label=label)

    phases = tuple(forced(p) for p in built.phases)
    return replace(built, phases=phases)
