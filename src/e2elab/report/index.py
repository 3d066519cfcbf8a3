"""An index page: every claim of every experiment in a report (or in several), with its
verdict and a link to where its page shows it."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2elab.report.evidence import reason
from e2elab.report.page import VERDICT_COLOURS, html_head, slug


def write_index(
    path: Path, title: str, pages: Sequence[tuple[str, str, Sequence[dict[str, Any]]]]
) -> Path:
    """Write ``path``: for each (page title, page href relative to ``path``, its claim
    rows), a table of the claims with verdict and one-line reason, each linking to the
    claim on its page."""
    out = html_head(title)
    totals: dict[str, int] = {}
    for _, _, rows in pages:
        for row in rows:
            verdict = str(row.get("verdict", "")).upper()
            totals[verdict] = totals.get(verdict, 0) + 1
    chips = "".join(
        f'<span style="background:{VERDICT_COLOURS.get(v, "#e0e0e0")}">{n} {v}</span>'
        for v, n in totals.items()
    )
    out.append(f'<p class="tally">{chips or "No claims."}</p>')
    for page_title, href, rows in pages:
        link = html.escape(href)
        out.append(f'<h2><a href="{link}">{html.escape(page_title)}</a></h2>')
        if not rows:
            out.append("<p>No claims.</p>")
            continue
        out.append(
            "<table><thead><tr><th>experiment</th><th>claim</th><th>statement</th>"
            "<th>verdict</th><th>reason</th></tr></thead><tbody>"
        )
        for row in rows:
            verdict = str(row.get("verdict", "")).upper()
            anchor = f"claim-{slug(str(row.get('anchor') or row.get('id', '')))}"
            colour = VERDICT_COLOURS.get(verdict, "#e0e0e0")
            why = row.get("reason") or reason(str(row.get("details", "")))
            out.append(
                f"<tr><td>{html.escape(str(row.get('experiment', '')))}</td>"
                f'<td><a href="{link}#{anchor}">{html.escape(str(row.get("id", "")))}</a></td>'
                f"<td>{html.escape(str(row.get('statement', '')))}</td>"
                f'<td class="verdict" style="background:{colour}">{html.escape(verdict)}</td>'
                f"<td>{html.escape(_with_stability(why, row))}</td></tr>"
            )
        out.append("</tbody></table>")
    out.append("</main></body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def _with_stability(reason: str, row: dict) -> str:
    """``(stable 100%) reason``: how stable the verdict is under the seeds, then why."""
    stability = str(row.get("stability") or "")
    return f"({stability}) {reason}" if stability and stability != "-" else reason
