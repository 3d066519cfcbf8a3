"""Claims evaluated: parameters checked against each check's signature, verdicts with
their stability and margin, and the deviations (each FAIL with its diagnostics)."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from e2elab.claims.cells import Cells
from e2elab.claims.verdict import CHECK_ALIASES, CHECKS, FAIL, PASS, Verdict, as_lists, renamed
from e2elab.errors import E2ELabError
from e2elab.records import RunResult

_WHERE_OPS = {">=", "<=", ">", "<", "in"}
# what evaluate passes: the runs, and the gradient-SNR measurements
_RUNS = ("cells", "snr")


def check_params(name: str, params: dict[str, Any], knobs: Iterable[str]) -> None:
    """Refuse, before anything trains, claim parameters that would break the check: a
    missing or unknown one, a value of the wrong type, a knob the task does not have, a
    ``where`` that is not ``{knob: value or {op: value}}``. Raises ``ValueError`` naming
    the parameter (the caller adds the file and field)."""
    check = CHECKS[name]
    hints = typing.get_type_hints(check)
    earlier = {new: old for old, new in CHECK_ALIASES.get(name, {}).items() if old in params}
    params = normalized(name, params)
    accepted = [p for p in inspect.signature(check).parameters if p not in _RUNS]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{name} takes no {', '.join(unknown)}; it accepts: {', '.join(accepted)}")
    for parameter in inspect.signature(check).parameters.values():
        if parameter.name in _RUNS:
            continue
        if parameter.default is inspect.Parameter.empty and parameter.name not in params:
            raise ValueError(f"{name} needs {parameter.name!r}")
    known = list(knobs)
    for key, value in params.items():
        try:
            TypeAdapter(hints[key]).validate_python(value, strict=True)
        except ValidationError:
            given = f" (given as {earlier[key]})" if key in earlier else ""
            raise ValueError(
                f"{key}{given} of {name} expects {_type_name(hints[key])}, got {value!r}"
            ) from None
        if key == "knob" and value is None:
            continue  # the only knob that varies over the runs the check reads
        if key == "knob" and value not in known:
            raise ValueError(f"knob {value!r} of {name} is not a knob of the task: {known}")
        if key in ("where", "low_where") and value is not None:
            for knob, wanted in value.items():
                if knob not in known:
                    raise ValueError(f"where names {knob!r}, not a knob of the task: {known}")
                if isinstance(wanted, dict) and not set(wanted) <= _WHERE_OPS:
                    ops = ", ".join(sorted(_WHERE_OPS))
                    raise ValueError(f"where.{knob} takes the operators {ops}, got {wanted}")


def normalized(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """One convention for every check: parameters under today's names (an earlier name
    is read, see ``CHECK_ALIASES``), and a parameter that takes a list of strategies
    (or other names) also takes a single one."""
    return as_lists(CHECKS[name], renamed(name, params))


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def evaluate(
    claims: list[Any],
    results: list[RunResult],
    snr: list[Any] | None = None,
    resample: bool = True,
    undecided: dict[str, str] | None = None,
) -> list[Verdict]:
    """Run each claim (objects with id, check, statement, params) on the results (and on
    gradient-SNR measurements, for checks that take ``snr``); with ``resample``, also on
    resamples of the seeds, for each verdict's stability (``stability``). ``undecided``:
    claim id -> why the profile cannot decide it, said beside its verdict."""
    from e2elab.stability import margin, stability

    verdicts = []
    cells = Cells.of(results)  # every check reads these, labelled by what varies in all
    for claim in claims:
        check = CHECKS[claim.check]
        extra = {"snr": snr or []} if "snr" in inspect.signature(check).parameters else {}
        try:
            params = normalized(claim.check, claim.params)
        except ValueError as error:  # a definition that skipped check_params, e.g. stored
            raise E2ELabError(f"claim {claim.id}: {error}") from None
        verdict = check(cells, **extra, **params)
        # a check over gradient-SNR measurements reads no seed's runs: resampling the
        # seeds would repeat its verdict every time and call it stable, so it is not
        if resample and not extra:
            judge = functools.partial(_judge, check, cells, {**extra, **params})
            judged = stability(verdict.verdict, judge, list(results))
            verdict.stable, verdict.resamples = judged.share, judged.resamples
        if resample:
            verdict.margin = margin(claim.check, params, verdict.numbers)
        verdict.id, verdict.statement = claim.id, claim.statement
        verdict.explains = list(getattr(claim, "explains", []) or [])
        why = (undecided or {}).get(claim.id)
        if why:
            verdict.undecided = why
            verdict.details = f"this profile cannot decide it: {why}. {verdict.details}"
        verdicts.append(verdict)
    return verdicts


def _judge(
    check: Callable[..., Verdict], cells: Cells, params: dict[str, Any], runs: list[RunResult]
) -> str:
    """The verdict on a resample of the runs, under the labels of all of them."""
    return check(cells.resampled(runs), **params).verdict


def deviations(verdicts: list[Verdict]) -> list[dict[str, str]]:
    """For every FAIL that is not itself a diagnostic: the diagnostic claims that explain
    it (``explains``), with their verdicts and numbers. A FAIL is "explained" when all of
    them pass, "partly explained" when some do, and "unexplained" when none does (or none
    measures it)."""
    rows = []
    for verdict in verdicts:
        if verdict.verdict != FAIL or verdict.explains:
            continue  # a diagnostic's FAIL shows under the claim it would explain
        found = [d for d in verdicts if verdict.id in d.explains]
        passed = [d for d in found if d.verdict == PASS]
        lines = [f"{d.id} ({d.verdict}): {d.statement} {d.details}" for d in found]
        rows.append(
            {
                "id": verdict.id,
                "verdict": (
                    "explained"
                    if found and len(passed) == len(found)
                    else "partly explained"
                    if passed
                    else "unexplained"
                ),
                "by": ", ".join(d.id for d in found) or "-",
                "details": "\n".join(lines) or "no diagnostic measures this yet",
            }
        )
    return rows
