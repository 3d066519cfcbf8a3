"""The report page's structure: verdicts with a one-line reason and links to their
evidence, summary tables instead of text, captioned figures grouped by claim, embedded
images, and an index of every claim."""

from __future__ import annotations

import re
from pathlib import Path

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
