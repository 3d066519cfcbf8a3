"""The report page: a claims table and the figures, as Markdown and as simple HTML."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

VERDICT_COLOURS = {"PASS": "#c8e6c9", "FAIL": "#ffcdd2", "INCONCLUSIVE": "#fff3c4"}
COLUMNS = ("claim", "statement", "verdict", "numbers")

_CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.verdict { font-weight: bold; white-space: nowrap; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
"""


@dataclass(frozen=True)
class Section:
    """A titled table after the claims: ``columns`` name the keys of each row, an
    optional ``intro`` says what it shows."""

    title: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    intro: str = ""


def write_report(
    out_dir: Path,
    title: str,
    claims: list[dict[str, Any]],
    figures: list[Path],
    summary_rows: str | None = None,
    sections: Sequence[Section] = (),
) -> Path:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; return the Markdown path.

    Each claim has "id", "statement", "verdict" (PASS, FAIL or INCONCLUSIVE) and "details"
    (the numbers). Figures are linked relative to ``out_dir``; ``summary_rows`` is shown
    verbatim (e.g. a table printed by ``e2elab run``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    links = [(Path(f).stem, _link(Path(f), out_dir)) for f in figures]
    md_path = out_dir / "report.md"
    md_path.write_text(_markdown(title, claims, links, summary_rows, sections), encoding="utf-8")
    page = _html(title, claims, links, summary_rows, sections)
    (out_dir / "report.html").write_text(page, "utf-8")
    return md_path


def _link(figure: Path, out_dir: Path) -> str:
    """The figure's path relative to the report, URL-quoted."""
    relative = os.path.relpath(figure.resolve(), out_dir.resolve())
    return quote(Path(relative).as_posix(), safe="/=,+")


def _cells(claim: dict[str, Any]) -> tuple[str, str, str, str]:
    verdict = str(claim.get("verdict", "")).strip().upper()
    return (
        str(claim.get("id", "")),
        str(claim.get("statement", "")),
        verdict,
        str(claim.get("details", "")),
    )


def _md_cell(text: str) -> str:
    """One Markdown table cell: pipes escaped, line breaks kept as <br>."""
    lines = text.replace("\r\n", "\n").strip().split("\n")
    return "<br>".join(line.replace("|", "\\|") for line in lines)


def _md_block(text: str) -> list[str]:
    """A Markdown table as is; any other text (e.g. a rich table) as a code block."""
    lines = text.strip("\n").split("\n")
    if all(line.lstrip().startswith("|") for line in lines if line.strip()):
        return lines
    return ["```", *lines, "```"]


def _markdown(
    title: str,
    claims: Sequence[dict[str, Any]],
    links: Sequence[tuple[str, str]],
    summary_rows: str | None,
    sections: Sequence[Section] = (),
) -> str:
    out = [f"# {' '.join(title.split())}", "", "## Claims", ""]
    if claims:
        out += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for claim in claims:
            ident, statement, verdict, details = (_md_cell(c) for c in _cells(claim))
            out.append(f"| {ident} | {statement} | **{verdict}** | {details} |")
    else:
        out.append("No claims.")
    for section in sections:
        out += ["", f"## {section.title}", ""]
        if section.intro:
            out += [section.intro, ""]
        if not section.rows:
            out.append("None.")
            continue
        out += ["| " + " | ".join(section.columns) + " |", "|" + "---|" * len(section.columns)]
        for row in section.rows:
            out.append(
                "| " + " | ".join(_md_cell(str(row.get(c, ""))) for c in section.columns) + " |"
            )
    if summary_rows:
        out += ["", "## Summary", "", *_md_block(summary_rows)]
    if links:
        out += ["", "## Figures"]
        for name, link in links:
            out += ["", f"![{name}]({link})"]
    return "\n".join(out) + "\n"


def _html_row(claim: dict[str, Any]) -> str:
    ident, statement, verdict, details = (html.escape(c) for c in _cells(claim))
    colour = VERDICT_COLOURS.get(verdict, "#e0e0e0")
    details = details.replace("\n", "<br>")
    return (
        f"<tr><td>{ident}</td><td>{statement}</td>"
        f'<td class="verdict" style="background:{colour}">{verdict}</td><td>{details}</td></tr>'
    )


def _html(
    title: str,
    claims: Sequence[dict[str, Any]],
    links: Sequence[tuple[str, str]],
    summary_rows: str | None,
    sections: Sequence[Section] = (),
) -> str:
    name = html.escape(title)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{name}</title><style>{_CSS}</style></head><body>",
        f"<h1>{name}</h1>",
        "<h2>Claims</h2>",
    ]
    if claims:
        header = "".join(f"<th>{c}</th>" for c in COLUMNS)
        out += [f"<table><thead><tr>{header}</tr></thead><tbody>"]
        out += [_html_row(c) for c in claims] + ["</tbody></table>"]
    else:
        out.append("<p>No claims.</p>")
    for section in sections:
        out.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.intro:
            out.append(f"<p>{html.escape(section.intro)}</p>")
        if not section.rows:
            out.append("<p>None.</p>")
            continue
        header = "".join(f"<th>{html.escape(c)}</th>" for c in section.columns)
        out.append(f"<table><thead><tr>{header}</tr></thead><tbody>")
        for row in section.rows:
            cells = "".join(
                f"<td>{html.escape(str(row.get(c, ''))).replace(chr(10), '<br>')}</td>"
                for c in section.columns
            )
            out.append(f"<tr>{cells}</tr>")
        out.append("</tbody></table>")
    if summary_rows:
        out += ["<h2>Summary</h2>", f"<pre>{html.escape(summary_rows.rstrip())}</pre>"]
    if links:
        out.append("<h2>Figures</h2>")
    for caption, link in links:
        src, text = html.escape(link), html.escape(caption)
        out.append(
            f'<figure><a href="{src}"><img src="{src}" alt="{text}"></a>'
            f"<figcaption>{text}</figcaption></figure>"
        )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
