"""The report page's structure: verdicts with a one-line reason and links to their
evidence, summary tables instead of text, captioned figures grouped by claim, embedded
images, and an index of every claim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from synthetic import fixture_store

from e2elab import experiment as experiments
from e2elab.cli import main
from e2elab.report.evidence import caption, claim_figures, reason


def test_reason_is_one_short_line_with_artifact_paths_cut():
    text = "frames=200: closed_loop.nominal.departures_per_km modular 0.5 vs e2e 0.25\nsecond line"
    assert reason(text) == "frames=200: nominal departures_per_km modular 0.5 vs e2e 0.25"
    long = reason("x " * 200)
    assert len(long) == 180 and long.endswith("…")
    assert reason("") == ""


def test_claim_figures_follow_the_check_the_names_and_the_where_knobs():
    figures = [
        Path(f"f/{n}.png")
        for n in (
            "accuracy_vs_n_m=10",
            "accuracy_vs_n_m=2",
            "learning_curves_m=10",
            "gradient_snr",
        )
    ]
    picked = claim_figures("at_chance", {"where": {"m": 2}}, figures)
    assert picked[0].stem == "accuracy_vs_n_m=2" and "accuracy_vs_n_m=10" not in {
        p.stem for p in picked
    }
    assert [p.stem for p in claim_figures("snr_contrast", {}, figures)] == ["gradient_snr"]
    named = claim_figures("at_chance", {}, figures, ["learning_curves"])
    assert [p.stem for p in named] == ["learning_curves_m=10"]
    assert claim_figures("unknown_check", {}, figures) == []
    assert "chance" in caption("accuracy_vs_n_m=10.png")
    assert caption("my_figure.png", {"my_figure": "Declared."}) == "Declared."


@pytest.mark.slow
def test_the_page_puts_verdicts_first_with_tables_captions_and_an_index(tmp_path):
    store = fixture_store(tmp_path / "s" / "results.sqlite", "glasmachers")
    assert main(["report", str(store), "-o", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    md = (tmp_path / "out" / "report.md").read_text()
    # verdicts come before every table and figure
    assert page.index('id="claims"') < page.index("Summary:") < page.index('id="fig-1"')
    assert '{"' not in page and "<pre>" not in page  # no JSON, no text dump
    # every claim row: a verdict, a reason, its numbers folded out, links that resolve
    rows = re.findall(r'<tr id="claim-[^"]+">.*?</tr>', page, re.S)
    claims = experiments.load_all("glasmachers")[1][0].claims
    assert len(rows) == len(claims)
    assert all(f"| {c.id} | " in md for c in claims)
    ids = set(re.findall(r' id="([^"]+)"', page))
    for row in rows:
        assert re.search(r'class="verdict"[^>]*>(PASS|FAIL|INCONCLUSIVE)<', row)
        assert "<details><summary>all numbers</summary>" in row
        targets = re.findall(r'href="#([^"]+)"', row)
        assert targets and all(t in ids for t in targets)
    # summary tables: one per grid point, strategies as rows, the best one marked
    assert page.count('<h2 id="summary-') == 12
    assert page.count('<tr class="best"') >= 12
    # figures: embedded, numbered, each with a caption
    figures = re.findall(r"<figure id=\"fig-(\d+)\"><img src=\"([^\"]+)\"", page)
    assert figures and all(src.startswith("data:image/png;base64,") for _, src in figures)
    assert page.count("<figcaption><b>Figure ") == len(figures)
    index = (tmp_path / "out" / "index.html").read_text()
    assert index.count('href="report.html#claim-') == len(rows)


def test_the_best_mark_skips_mostly_diverged_strategies_and_marks_ties():
    import dataclasses

    from synthetic import result

    from e2elab.report.build import summary_sections

    runs = [result("e2e", 2, s, 0.95 if s == 0 else 0.1, None) for s in range(5)]
    runs = [r if r.spec.seed == 0 else dataclasses.replace(r, status="diverged") for r in runs]
    runs += [result("modular", 2, s, 0.90, 20_000) for s in range(5)]
    runs += [result("greedy", 2, s, 0.90, 20_000) for s in range(5)]
    [table] = summary_sections(runs)
    best = {r["strategy"] for r in table.rows if r["_best"]}
    assert best == {"modular", "greedy"}  # e2e's one finished seed at 0.95 does not count
    e2e = next(r for r in table.rows if r["strategy"] == "e2e")
    assert e2e["diverged / failed"] == "4 / 0" and not e2e["_best"]


def test_claims_link_the_summary_tables_of_their_grid_points(tmp_path):
    from e2elab.report.build import _tables_for
    from e2elab.report.page import Section

    tables = [
        Section(f"Summary: m={m}, n={n}", (), [], anchor=f"t{m}{n}", point={"m": m, "n": n})
        for m in (2, 10)
        for n in (1, 2)
    ]
    assert _tables_for("n=1: 0.5; n=2: 0.6", {"m": 10}, tables) == [
        ("t101", "m=10, n=1"),
        ("t102", "m=10, n=2"),
    ]
    assert _tables_for("m=2, n=12: x", {}, tables) == [("t21", "summary tables")]


def test_markdown_escapes_html_in_statements(tmp_path):
    from e2elab.report.page import write_report

    claims = [
        {"id": "<b>X</b>", "statement": "<script>x</script>", "verdict": "PASS", "details": "ok"}
    ]
    text = write_report(tmp_path, "T <i>", claims, []).read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "<b>" not in text
