"""The report page, as Markdown (for repositories) and as one self-contained HTML file
(for people): verdicts first, each with a one-line reason and links to the figures and
table rows behind it, the full numbers folding out; then the tables; then the figures,
grouped by the claim they support, each with a caption. The HTML embeds its figures, so
the file opens offline and can be sent on its own."""

from __future__ import annotations

import base64
import html
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from e2elab.report.evidence import caption, reason

VERDICT_COLOURS = {"PASS": "#c8e6c9", "FAIL": "#ffcdd2", "INCONCLUSIVE": "#fff3c4"}
COLUMNS = ("claim", "statement", "verdict", "numbers")

PAGE_CSS = """
:root { --line: #c9c9c9; --muted: #555; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  color: #1d1d1d; line-height: 1.45; }
main { max-width: 1360px; margin: 0 auto; padding: 1.5em 2em 3em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 2em; border-bottom: 1px solid var(--line); padding-bottom: 0.2em; }
p.tally span { display: inline-block; padding: 0.1em 0.6em; margin-right: 0.4em;
  border-radius: 0.8em; font-weight: 600; }
table { border-collapse: collapse; margin: 0.8em 0; width: 100%; }
th, td { border: 1px solid var(--line); padding: 0.35em 0.55em; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
th { background: #f0f0f0; overflow-wrap: normal; }
td.verdict { font-weight: 700; white-space: nowrap; }
table.claims th, table.claims td:first-child { white-space: nowrap; overflow-wrap: normal; }
table.claims td:nth-child(2) { min-width: 16em; }
table.claims td:nth-child(4) { min-width: 18em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary { font-size: 0.88em; }
table.summary td:first-child { overflow-wrap: normal; word-break: break-word; }
tr.best td { font-weight: 600; background: #eef6ee; }
td.links a { display: inline-block; margin-right: 0.5em; }
details summary { cursor: pointer; color: var(--muted); }
details div.numbers { font-size: 0.9em; margin-top: 0.3em; white-space: pre-wrap; }
.intro { color: var(--muted); }
figure { margin: 1.2em 0 2em; break-inside: avoid; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid #eee; }
figcaption { color: var(--muted); font-size: 0.92em; margin-top: 0.4em; max-width: 70em; }
section.claim h3 { margin-bottom: 0.2em; }
.chip { padding: 0.05em 0.5em; border-radius: 0.6em; font-size: 0.85em; font-weight: 700; }
pre { background: #f6f6f6; padding: 0.8em; white-space: pre-wrap; overflow-wrap: anywhere; }
@media print {
  main { max-width: none; padding: 0; }
  table { font-size: 0.72em; }
  th, td { padding: 0.2em 0.3em; overflow-wrap: anywhere; }
  table.claims td:nth-child(2), table.claims td:nth-child(4) { min-width: 0; }
  a { color: inherit; text-decoration: none; }
  details > summary { display: none; }
  h2 { break-after: avoid; }
}
"""

# print with every fold open (a closed <details> hides its numbers on paper)
_SCRIPT = """
window.addEventListener("beforeprint", () => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
});
"""


@dataclass(frozen=True)
class Section:
    """A titled table: ``columns`` name the keys of each row, an optional ``intro`` says
    what it shows, ``anchor`` is its id on the page; a row with ``"_best": True`` is
    marked as the best of its table."""

    title: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    intro: str = ""
    anchor: str = ""
    numeric: tuple[str, ...] = field(default=())
    # for a summary table: its grid point (the knobs that vary), for linking claims
    point: dict[str, Any] = field(default_factory=dict)


def slug(text: str) -> str:
    """An HTML id from any text."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "x"


def html_head(title: str) -> list[str]:
    """The lines that open an e2elab page: doctype, head with the page's stylesheet, and
    the title as its heading."""
    name = html.escape(" ".join(title.split()))
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{name}</title><style>{PAGE_CSS}</style></head><body><main>",
        f"<h1>{name}</h1>",
    ]


def write_report(
    out_dir: Path,
    title: str,
    claims: list[dict[str, Any]],
    figures: list[Path],
    summary_rows: str | None = None,
    sections: Sequence[Section] = (),
    tables: Sequence[Section] = (),
    captions: dict[str, str] | None = None,
) -> Path:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; return the Markdown path.

    Each claim has "id", "statement", "verdict" (PASS, FAIL or INCONCLUSIVE) and "details"
    (the numbers); optionally "figures" (paths among ``figures`` that show it) and
    "tables" (anchors of ``tables`` whose rows it reads). ``sections`` come after the
    claims, ``tables`` (the summary) after them; ``summary_rows`` is text shown verbatim
    (e.g. a table printed by ``e2elab run``). ``captions`` override figure captions by
    file stem. The Markdown links its figures relative to ``out_dir``; the HTML embeds
    them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = _Page(out_dir, title, claims, figures, summary_rows, sections, tables, captions)
    md_path = out_dir / "report.md"
    md_path.write_text(page.markdown(), encoding="utf-8")
    (out_dir / "report.html").write_text(page.html(), "utf-8")
    return md_path


def _link(figure: Path, out_dir: Path) -> str:
    """The figure's path relative to the report, URL-quoted."""
    relative = os.path.relpath(figure.resolve(), out_dir.resolve())
    return quote(Path(relative).as_posix(), safe="/=,+")


def _embedded(figure: Path) -> str:
    """The figure as a data URI (a missing file: its relative path, so nothing breaks)."""
    try:
        data = base64.b64encode(figure.read_bytes()).decode("ascii")
    except OSError:
        return ""
    kind = "svg+xml" if figure.suffix.lower() == ".svg" else figure.suffix.lower().lstrip(".")
    return f"data:image/{kind or 'png'};base64,{data}"


def _verdict_text(claim: dict[str, Any]) -> str:
    """``PASS (stable 100%; ratio 1.41 against 1)``: the verdict, how stable it is under
    the seeds, and its margin to the claim's threshold, where measured."""
    verdict = _cells(claim)[2]
    extra = [t for t in (claim.get("stability"), claim.get("margin")) if t and t != "-"]
    return f"{verdict} ({'; '.join(extra)})" if extra else verdict


def _fragile(claims: list[dict[str, Any]]) -> int:
    return sum("fragile" in str(c.get("stability", "")) for c in claims)


def _undecided(claims: list[dict[str, Any]]) -> str:
    count = sum(bool(c.get("undecided")) for c in claims)
    return f"; {count} undecided by this profile (its YAML says why)" if count else ""


def _cells(claim: dict[str, Any]) -> tuple[str, str, str, str]:
    verdict = str(claim.get("verdict", "")).strip().upper()
    return (
        str(claim.get("id", "")),
        str(claim.get("statement", "")),
        verdict,
        str(claim.get("details", "")),
    )


def _md_text(text: str) -> str:
    """Text for Markdown: angle brackets escaped, so no HTML in it is rendered."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(text: str) -> str:
    """One Markdown table cell: HTML and pipes escaped, line breaks kept as <br>."""
    lines = _md_text(text).replace("\r\n", "\n").strip().split("\n")
    return "<br>".join(line.replace("|", "\\|") for line in lines)


def _md_block(text: str) -> list[str]:
    """A Markdown table as is; any other text (e.g. a rich table) as a code block."""
    lines = text.strip("\n").split("\n")
    if all(line.lstrip().startswith("|") for line in lines if line.strip()):
        return lines
    return ["```", *lines, "```"]


def _esc(value: Any) -> str:
    return html.escape(str(value)).replace("\n", "<br>")


class _Page:
    """One report's content, laid out twice (Markdown, HTML)."""

    def __init__(
        self,
        out_dir: Path,
        title: str,
        claims: Sequence[dict[str, Any]],
        figures: Sequence[Path],
        summary_rows: str | None,
        sections: Sequence[Section],
        tables: Sequence[Section],
        captions: dict[str, str] | None,
    ) -> None:
        self.out_dir, self.title = out_dir, " ".join(title.split())
        self.claims, self.figures = list(claims), [Path(f) for f in figures]
        self.summary_rows, self.sections, self.tables = summary_rows, sections, tables
        self.captions = captions or {}
        # every claim's anchor; every figure's number, in the order the page shows them
        self.anchors = [
            f"claim-{slug(str(c.get('anchor') or c.get('id', i)))}"
            for i, c in enumerate(self.claims)
        ]
        self.groups = self._groups()
        order = [f for _, shown in self.groups for f in shown]
        self.number = {f: i + 1 for i, f in enumerate(order)}

    def _groups(self) -> list[tuple[int | None, list[Path]]]:
        """(claim index, the figures first shown under it); then (None, the rest)."""
        seen: set[Path] = set()
        out: list[tuple[int | None, list[Path]]] = []
        for index, claim in enumerate(self.claims):
            mine = [Path(f) for f in claim.get("figures", []) if Path(f) in self.figures]
            new = [f for f in mine if f not in seen]
            seen.update(new)
            if new:
                out.append((index, new))
        rest = [f for f in self.figures if f not in seen]
        if rest:
            out.append((None, rest))
        return out

    def _caption(self, figure: Path) -> str:
        return self.captions.get(str(figure)) or caption(figure, self.captions)

    def _fig_id(self, figure: Path) -> str:
        return f"fig-{self.number[figure]}"

    # ------------------------------------------------------------------ Markdown

    def markdown(self) -> str:
        out = [f"# {_md_text(self.title)}", "", "## Claims", ""]
        fragile = _fragile(self.claims)
        if self.claims:
            counts = Counter(_cells(c)[2] for c in self.claims)
            tally = ", ".join(f"{n} {v}" for v, n in counts.items())
            out += [
                f"{tally}; {fragile} fragile (stable in under 80% of the seed resamples)"
                + _undecided(self.claims),
                "",
            ]
        if self.claims:
            columns = ("claim", "statement", "verdict", "reason", "evidence", "numbers")
            out += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            for claim in self.claims:
                ident, statement, verdict, details = (_md_cell(c) for c in _cells(claim))
                shown = [f for f in claim.get("figures", []) if Path(f) in self.number]
                evidence = ", ".join(f"Figure {self.number[Path(f)]}" for f in shown)
                why = _md_cell(claim.get("reason") or reason(_cells(claim)[3]))
                how = _md_cell(_verdict_text(claim).removeprefix(verdict).strip())
                shown = f"**{verdict}** {how}" if how else f"**{verdict}**"
                out.append(
                    f"| {ident} | {statement} | {shown} | {why} | {evidence or '-'} | {details} |"
                )
        else:
            out.append("No claims.")
        for section in [*self.sections, *self.tables]:
            out += self._md_section(section)
        if self.summary_rows:
            out += ["", "## Summary", "", *_md_block(self.summary_rows)]
        if self.groups:
            out += ["", "## Figures"]
        for index, shown in self.groups:
            out += ["", f"### {self._md_group_title(index)}"]
            for figure in shown:
                link = _link(figure, self.out_dir)
                out += [
                    "",
                    f"![Figure {self.number[figure]}: {figure.stem}]({link})",
                    "",
                    f"*Figure {self.number[figure]}.* {self._caption(figure)}",
                ]
        return "\n".join(out) + "\n"

    def _md_section(self, section: Section) -> list[str]:
        out = ["", f"## {_md_text(section.title)}", ""]
        if section.intro:
            out += [_md_text(section.intro), ""]
        if not section.rows:
            return [*out, "None."]
        out += ["| " + " | ".join(section.columns) + " |", "|" + "---|" * len(section.columns)]
        for row in section.rows:
            cells = [_md_cell(str(row.get(c, ""))) for c in section.columns]
            if row.get("_best"):
                cells[0] = f"**{cells[0]}** (best)"
            out.append("| " + " | ".join(cells) + " |")
        return out

    def _group_title(self, index: int | None) -> str:
        if index is None:
            return "Other figures"
        ident, statement, verdict, _ = _cells(self.claims[index])
        return f"{ident} ({verdict}): {' '.join(statement.split())}"

    def _md_group_title(self, index: int | None) -> str:
        return _md_text(self._group_title(index))

    # ---------------------------------------------------------------------- HTML

    def html(self) -> str:
        out = [
            *html_head(self.title),
            self._tally(),
            '<h2 id="claims">Claims</h2>',
        ]
        out += self._claims_table() if self.claims else ["<p>No claims.</p>"]
        for section in [*self.sections, *self.tables]:
            out += self._html_section(section)
        if self.summary_rows:
            out += ["<h2>Summary</h2>", f"<pre>{html.escape(self.summary_rows.rstrip())}</pre>"]
        if self.groups:
            out.append('<h2 id="figures">Figures, by claim</h2>')
        for index, shown in self.groups:
            out += self._figure_group(index, shown)
        out.append(f"</main><script>{_SCRIPT}</script></body></html>")
        return "\n".join(out) + "\n"

    def _tally(self) -> str:
        counts = {v: 0 for v in VERDICT_COLOURS}
        for claim in self.claims:
            verdict = _cells(claim)[2]
            counts[verdict] = counts.get(verdict, 0) + 1
        chips = "".join(
            f'<span style="background:{VERDICT_COLOURS.get(v, "#e0e0e0")}">{n} {v}</span>'
            for v, n in counts.items()
            if n
        )
        fragile = _fragile(self.claims)
        if fragile:
            chips += f'<span style="background:#eeeeee">{fragile} fragile</span>'
        return f'<p class="tally">{chips or "No claims."}</p>'

    def _claims_table(self) -> list[str]:
        header = "".join(
            f"<th>{c}</th>" for c in ("claim", "statement", "verdict", "reason", "evidence")
        )
        out = [f'<table class="claims"><thead><tr>{header}</tr></thead><tbody>']
        for index, claim in enumerate(self.claims):
            ident, statement, verdict, details = _cells(claim)
            colour = VERDICT_COLOURS.get(verdict, "#e0e0e0")
            why = claim.get("reason") or reason(details)
            links = [
                f'<a href="#{self._fig_id(Path(f))}">Figure {self.number[Path(f)]}</a>'
                for f in claim.get("figures", [])
                if Path(f) in self.number
            ]
            links += [
                f'<a href="#{html.escape(anchor)}">{html.escape(label)}</a>'
                for anchor, label in claim.get("tables", [])
            ]
            # how stable the verdict is, and its margin: first in the reason's cell, so
            # the verdict's own cell says PASS, FAIL or INCONCLUSIVE and nothing else
            how = _verdict_text(claim).removeprefix(verdict).strip(" ()")
            stable = f'<small class="stability">{_esc(how)}</small><br>' if how else ""
            out.append(
                f'<tr id="{self.anchors[index]}"><td>{_esc(ident)}</td><td>{_esc(statement)}'
                f"</td>"
                f'<td class="verdict" style="background:{colour}">{_esc(verdict)}</td>'
                f"<td>{stable}{_esc(why)}<details><summary>all numbers</summary>"
                f'<div class="numbers">{html.escape(details)}</div></details></td>'
                f'<td class="links">{"".join(links) or "-"}</td></tr>'
            )
        out.append("</tbody></table>")
        return out

    def _html_section(self, section: Section) -> list[str]:
        anchor = f' id="{html.escape(section.anchor)}"' if section.anchor else ""
        out = [f"<h2{anchor}>{_esc(section.title)}</h2>"]
        if section.intro:
            out.append(f'<p class="intro">{_esc(section.intro)}</p>')
        if not section.rows:
            return [*out, "<p>None.</p>"]
        header = "".join(f"<th>{_esc(c)}</th>" for c in section.columns)
        kind = "summary" if section.point or section.numeric else "plain"
        out.append(f'<table class="{kind}"><thead><tr>{header}</tr></thead><tbody>')
        for row in section.rows:
            best = ' class="best"' if row.get("_best") else ""
            row_id = f' id="{html.escape(row["_id"])}"' if row.get("_id") else ""
            cells = []
            for i, column in enumerate(section.columns):
                text = _esc(row.get(column, ""))
                if i == 0 and row.get("_best"):
                    text += " &#9733;"
                kind = ' class="num"' if column in section.numeric else ""
                cells.append(f"<td{kind}>{text}</td>")
            out.append(f"<tr{best}{row_id}>{''.join(cells)}</tr>")
        out.append("</tbody></table>")
        return out

    def _figure_group(self, index: int | None, shown: list[Path]) -> list[str]:
        out = ['<section class="claim">']
        if index is None:
            out.append("<h3>Other figures</h3>")
        else:
            verdict = _cells(self.claims[index])[2]
            colour = VERDICT_COLOURS.get(verdict, "#e0e0e0")
            out.append(
                f'<h3><a href="#{self.anchors[index]}">{_esc(self._group_title(index))}</a> '
                f'<span class="chip" style="background:{colour}">{_esc(verdict)}</span></h3>'
            )
        for figure in shown:
            number = self.number[figure]
            source = _embedded(figure) or _link(figure, self.out_dir)
            text = self._caption(figure)
            out.append(
                f'<figure id="{self._fig_id(figure)}"><img src="{html.escape(source)}" '
                f'alt="Figure {number}: {html.escape(figure.stem)}">'
                f"<figcaption><b>Figure {number}.</b> {html.escape(text)}</figcaption></figure>"
            )
        out.append("</section>")
        return out
