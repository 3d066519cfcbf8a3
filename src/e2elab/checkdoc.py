"""Every claim check, documented from one source: the checks' own signatures and
docstrings. ``e2elab checks`` prints it, and ``docs/checks.md`` is this module's
markdown, kept in step by a test."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any

from e2elab.claims import CHECK_ALIASES, CHECKS

_CONVENTIONS = """\
Conventions shared by every check:

- A parameter means the same in every check that has it. `winner` and `loser`: the
  strategy claimed to do better and the one it beats (`winners`: several, the best of
  which is meant). `strategy`: the one strategy whose cells are judged (a `*` pattern is
  allowed); `strategies`: several, each judged alone. `knob`: the knob whose values the
  check walks; where its default is `None`, it is the only knob that varies over the runs
  the check reads (the check says INCONCLUSIVE and asks for one where several vary).
  Before e2elab 0.1's spec version 7 the default was `n` in `breakdown` and
  `ratio_grows_with_knob` and `k` in `snr_contrast` and `snr_below_resolution`: a claim
  written for that default names the knob now where its grid varies over several.
- Earlier parameter names are still read where a check lists them (e.g. `slow` for
  `loser`); giving both names is an error.
- A parameter that takes a list of strategies (or other names) also takes a single one.
- `where` selects grid points: `{knob: value}` or `{knob: {">=": value}}` (operators
  `>=`, `<=`, `>`, `<`, `in`).
- Examples-to-threshold counts every example drawn before the run first reached the
  threshold, earlier phases included. A run that never reached it counts as infinitely
  many examples: in a ratio, never / reached = inf, reached / never = 0, and never /
  never is undetermined, which makes a check INCONCLUSIVE (never FAIL) where nothing else
  decides it.
- Diverged or failed runs are counted apart; a cell with no finished run is no evidence,
  so a check that needs one says INCONCLUSIVE and names the divergence.
- Thresholds are fixed in the experiment file, never fitted to the data.
"""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: str | None  # None: required


@dataclass(frozen=True)
class CheckDoc:
    name: str
    parameters: tuple[Parameter, ...]
    summary: str  # the docstring's first paragraph: what a PASS means
    details: str  # the rest of the docstring
    needs_snr: bool
    aliases: tuple[tuple[str, str], ...] = ()  # earlier name -> today's, still read


def _type(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("NoneType", "None")


def documented() -> list[CheckDoc]:
    """Every check in ``claims.CHECKS``, in registry order."""
    out = []
    for name, check in CHECKS.items():
        hints = typing.get_type_hints(check)
        parameters = []
        signature = inspect.signature(check)
        for p in signature.parameters.values():
            if p.name in ("cells", "snr"):
                continue
            default = None if p.default is inspect.Parameter.empty else repr(p.default)
            parameters.append(Parameter(p.name, _type(hints.get(p.name, Any)), default))
        doc = inspect.cleandoc(check.__doc__ or "")
        first, _, rest = doc.partition("\n\n")
        out.append(
            CheckDoc(
                name,
                tuple(parameters),
                " ".join(first.split()),
                rest.strip(),
                "snr" in signature.parameters,
                tuple(CHECK_ALIASES.get(name, {}).items()),
            )
        )
    return out


def markdown(only: str | None = None) -> str:
    """``docs/checks.md`` (with ``only``, the conventions and that one check)."""
    lines = [
        "# Claim checks",
        "",
        "Generated from the checks' signatures and docstrings (`e2elab checks --markdown`);",
        "`tests/test_checkdoc.py` keeps this file in step with the code.",
        "",
        _CONVENTIONS,
    ]
    for doc in documented():
        if only is not None and doc.name != only:
            continue
        lines += [f"## `{doc.name}`", "", doc.summary, ""]
        if doc.details:
            lines += [doc.details, ""]
        if doc.needs_snr:
            lines += ["Reads the experiment's gradient-SNR measurements (`snr:`).", ""]
        lines += ["| parameter | type | default |", "|---|---|---|"]
        for p in doc.parameters:
            default = "required" if p.default is None else f"`{p.default}`"
            kind = p.type.replace("|", "\\|")  # a pipe would end the table cell
            lines.append(f"| `{p.name}` | `{kind}` | {default} |")
        if doc.aliases:
            earlier = ", ".join(f"`{old}` for `{new}`" for old, new in doc.aliases)
            lines += ["", f"Earlier names, still read: {earlier}."]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
