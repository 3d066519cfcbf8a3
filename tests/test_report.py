"""Report figures and page, on synthetic results (no training)."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest
from synthetic import result, spec

from e2elab.errors import E2ELabError
from e2elab.records import RunResult
from e2elab.report import figures, page
from e2elab.report.figures import (
    all_figures,
    examples_to_threshold_vs_knob,
    learning_curves,
    probe_heatmap,
    strategy_styles,
    threshold_cell,
)
from e2elab.report.page import write_report
from e2elab.summary import summarize

BUDGET = 10_000
STRATEGIES = ("e2e", "modular", "frozen_others:module=adder_1")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_result(
    strategy: str,
    n: int,
    m: int = 10,
    seed: int = 0,
    reach: int | None = 4_000,
    probes: bool = True,
    status: str = "ok",
) -> RunResult:
    """A run whose output accuracy climbs linearly to 0.9 (or stays at chance)."""
    chance = 1 / m
    top = 0.9 if reach is not None else chance
    xs = range(0, BUDGET + 1, 2_000)
    curve = [
        {"examples": x, "phase": 0, "metrics": {f"sum_{n}": chance + (top - chance) * x / BUDGET}}
        for x in xs
    ]
    modules = {"recognizer": [f"digit_{i}" for i in range(1, n + 1)]}
    modules.update({f"adder_{i}": [f"sum_{i}"] for i in range(1, n + 1)})
    ports = [p for group in modules.values() for p in group]
    extra = {
        "probes": {p: 0.5 + 0.1 * seed for p in ports} if probes else {},
        "modules": modules if probes else {},
    }
    knobs = {"n": n, "m": m, "test_size": 100}
    made = spec("digit-chain", knobs, strategy, seed, budget=BUDGET, threshold=0.8)
    fields = {f.name for f in dataclasses.fields(RunResult)}
    result = RunResult(
        id=f"{strategy}-{n}-{m}-{seed}",
        spec=made,
        status=status,
        reason=None,
        output=f"sum_{n}",
        curve=curve,
        final={f"sum_{n}": curve[-1]["metrics"][f"sum_{n}"]},
        chance={f"sum_{n}": chance},
        examples_to_threshold=reach,
        at_chance=reach is None,
        at_chance_p_value=None,
        test_size=100,
        wall_seconds=1.0,
        memory={},
        **{k: v for k, v in extra.items() if k in fields},
    )
    for key, value in extra.items():  # before the fields exist on RunResult
        if key not in fields:
            setattr(result, key, value)
    return result


def grid(probes: bool = True) -> list[RunResult]:
    """Two values of m, three of n, three seeds; frozen_others never reaches the threshold,
    modular reaches it with two seeds of three at n=3."""
    results = []
    for m in (10, 2):
        for n in (1, 2, 3):
            for strategy in STRATEGIES:
                for seed in range(3):
                    reach: int | None = 2_000 * n
                    if strategy.startswith("frozen_others") or (
                        strategy == "modular" and n == 3 and seed == 0
                    ):
                        reach = None
                    results.append(make_result(strategy, n, m, seed, reach, probes))
    return results


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> tuple[Path, list[Path], int]:
    """All figures of ``grid()`` drawn once: the folder, the paths, figures left open."""
    out = tmp_path_factory.mktemp("report") / "figures"
    before = len(figures.plt.get_fignums())
    paths = all_figures(grid(), "n", out)
    return out, paths, len(figures.plt.get_fignums()) - before


def test_all_figures_writes_one_png_per_figure_and_group(drawn) -> None:
    out, paths, _ = drawn
    names = sorted(p.name for p in paths)
    probed = sorted({r.spec.strategy for r in grid() if r.probes})
    assert "e2e" in probed and len(probed) > 1  # a heat map for every strategy with probes
    expected = [
        f"{kind}_m={m}.png"
        for kind in (
            "accuracy_vs_n",
            "examples_to_threshold_vs_n",
            "learning_curves",
            "port_curves",
            "probe_heatmap_e2e",
            "probe_heatmaps",
        )
        for m in (10, 2)
    ]
    assert names == sorted(expected)
    for path in paths:
        assert path.parent == out
        width, height = png_size(path)
        assert 500 <= width <= 3000 and 300 <= height <= 2000, (path.name, width, height)
        assert path.stat().st_size > 10_000


def test_figures_leave_no_open_matplotlib_figures(drawn) -> None:
    assert drawn[2] == 0


def test_fixed_selects_one_group_and_names_it(tmp_path: Path) -> None:
    paths = learning_curves(grid(), "n", tmp_path, fixed={"m": 2})
    assert [p.name for p in paths] == ["learning_curves_m=2.png"]


def test_constant_knobs_stay_out_of_file_names(tmp_path: Path) -> None:
    only_m10 = [r for r in grid() if r.spec.knobs["m"] == 10]
    paths = learning_curves(only_m10, "n", tmp_path)
    assert [p.name for p in paths] == ["learning_curves.png"]


def test_unknown_knob_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(E2ELabError, match="knob 'width'"):
        all_figures(grid(), "width", tmp_path)


def test_probe_heatmap_skipped_without_probes(tmp_path: Path) -> None:
    results = [r for r in grid(probes=False) if r.spec.knobs["m"] == 2]
    assert probe_heatmap(results, "n", tmp_path) == []
    names = [p.name for p in all_figures(results, "n", tmp_path)]
    assert names and not any("probe" in name for name in names)


def test_probe_heatmap_values_average_module_ports_then_seeds() -> None:
    results = [make_result("e2e", 2, seed=s) for s in range(3)]
    results[0].probes["digit_1"] = 0.0  # recognizer ports of seed 0: mean (0.0 + 0.5) / 2
    row = ("recognizer", "balanced accuracy")
    value = figures._probe_value(results, "n", 2, row)
    assert value == pytest.approx((0.25 + 0.6 + 0.7) / 3)
    missing = ("adder_3", "balanced accuracy")
    assert figures._probe_value(results, "n", 2, missing) != figures._probe_value(
        results, "n", 2, missing
    )  # NaN: no such module at n=2


def test_probe_heatmap_never_averages_balanced_accuracy_with_r2(tmp_path: Path, monkeypatch):
    seen = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: seen.append(fig) or save(fig, path))
    results = [make_result("e2e", 2, seed=s) for s in range(2)]
    for r in results:  # the recognizer's second port is a regression port, scored by R^2
        r.probe_metric = {p: "balanced accuracy" for p in r.probes} | {"digit_2": "R2"}
        r.probes["digit_2"] = -3.0
    assert len(probe_heatmap(results, "n", tmp_path)) == 1
    rows = [t.get_text() for t in seen[0].axes[0].get_yticklabels()]
    assert "recognizer [balanced accuracy]" in rows and "recognizer [R2]" in rows
    value = figures._probe_value(results, "n", 2, ("recognizer", "balanced accuracy"))
    assert value == pytest.approx((0.5 + 0.6) / 2)  # digit_1 over seeds; R^2 left out
    assert seen[0].axes[1].get_ylabel() == "linear probe balanced accuracy / R2"


def test_threshold_cell_counts_seeds_that_never_reached() -> None:
    never = threshold_cell([make_result("e2e", 1, seed=s, reach=None) for s in range(3)])
    assert (never.reached, never.missed, never.runs, never.budget) == (0, 3, 3, BUDGET)
    assert never.mean != never.mean  # NaN: nothing to average
    some = threshold_cell(
        [make_result("e2e", 1, seed=0, reach=None)]
        + [make_result("e2e", 1, seed=s, reach=1_000 * s) for s in (1, 2)]
    )
    assert (some.reached, some.missed) == (2, 1)
    assert (some.mean, some.low, some.high) == (1_500, 1_000, 2_000)
    diverged = threshold_cell([make_result("e2e", 1, reach=None, status="diverged")])
    assert (diverged.runs, diverged.diverged) == (0, 1)


def test_threshold_figure_marks_not_reached_at_budget(tmp_path: Path, monkeypatch) -> None:
    seen = []
    save = figures._save

    def capture(fig, path):
        ax = fig.axes[0]
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        notes = [t.get_text() for t in ax.texts]
        open_at_budget = [
            line
            for line in ax.lines
            if line.get_markerfacecolor() == "none" and list(line.get_ydata()) == [BUDGET]
        ]
        seen.append((legend, notes, len(open_at_budget)))
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", capture)
    results = [r for r in grid() if r.spec.knobs["m"] == 10]
    paths = examples_to_threshold_vs_knob(results, "n", tmp_path)
    assert len(paths) == 1 and png_size(paths[0])[0] > 500
    [(legend, notes, markers)] = seen
    assert "not reached (plotted at budget)" in legend
    assert "frozen_others:module=adder_1" in legend
    # frozen_others: 3/3 missed at each n; modular: 1/3 missed at n=3
    assert sorted(notes) == ["1/3", "3/3", "3/3", "3/3"]
    assert markers == 4


def test_strategy_styles_are_fixed_for_shipped_names_and_distinct() -> None:
    a = strategy_styles(["modular", "e2e", "frozen_others:module=adder_1"])
    b = strategy_styles(["frozen_others:module=adder_2", "e2e", "frozen_others:module=adder_1"])
    assert a["e2e"] == b["e2e"]
    assert a["frozen_others:module=adder_1"] == b["frozen_others:module=adder_1"]
    assert b["frozen_others:module=adder_1"]["color"] != b["frozen_others:module=adder_2"]["color"]
    assert list(a) == ["modular", "e2e", "frozen_others:module=adder_1"]  # first-seen order


CLAIMS = [
    {
        "id": "C1",
        "statement": "e2e | modular < 0.5",
        "verdict": "PASS",
        "details": "acc 0.91 [0.88, 0.94]",
    },
    {"id": "C2", "statement": "<b>bold</b> & more", "verdict": "FAIL", "details": "3/3 seeds"},
    {"id": "C3", "statement": "hinted helps", "verdict": "INCONCLUSIVE", "details": "n=1"},
]


def test_write_report_markdown_has_claims_table_and_figure_links(drawn) -> None:
    out, figs, _ = drawn
    md_path = write_report(out.parent, "Digit chain", CLAIMS, figs, summary_rows="e2e  0.91")
    text = md_path.read_text()
    assert md_path == out.parent / "report.md"
    assert (out.parent / "report.html").exists()
    assert text.startswith("# Digit chain\n")
    assert "| claim | statement | verdict | reason | evidence | numbers |" in text
    # the reason is the numbers' first line; no claim names a figure here
    assert (
        "| C1 | e2e \\| modular &lt; 0.5 | **PASS** | acc 0.91 [0.88, 0.94] | - "
        "| acc 0.91 [0.88, 0.94] |" in text
    )
    assert "| C3 | hinted helps | **INCONCLUSIVE** | n=1 | - | n=1 |" in text
    assert "```\ne2e  0.91\n```" in text
    for number, fig in enumerate(figs, 1):
        assert f"](figures/{fig.name})" in text
        assert f"*Figure {number}.* " in text  # every figure has a caption
    assert str(out) not in text  # links are relative


def test_write_report_html_escapes_and_colours_verdicts(tmp_path: Path) -> None:
    fig = tmp_path / "figs" / "a b.png"
    fig.parent.mkdir()
    fig.write_bytes(PNG_SIGNATURE)
    write_report(tmp_path / "out", "Title <x>", CLAIMS, [fig])
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<title>Title &lt;x&gt;</title>" in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in html and "<b>bold</b>" not in html
    assert f'background:{page.VERDICT_COLOURS["FAIL"]}">FAIL<' in html
    assert f'background:{page.VERDICT_COLOURS["PASS"]}">PASS<' in html
    # the page stands alone: the figure is embedded, not linked
    assert 'src="data:image/png;base64,' in html and "../figs/" not in html
    md = (tmp_path / "out" / "report.md").read_text()
    assert "](../figs/a%20b.png)" in md


def test_write_report_keeps_a_markdown_summary_table(tmp_path: Path) -> None:
    table = "| strategy | acc |\n|---|---|\n| e2e | 0.9 |"
    text = write_report(tmp_path, "T", [], [], summary_rows=table).read_text()
    assert table in text and "```" not in text
    assert "No claims." in text


def test_learning_curves_leave_out_and_count_diverged_runs(tmp_path: Path, monkeypatch) -> None:
    seen = []
    save = figures._save

    def capture(fig, path):
        ax = fig.axes[0]
        seen.append(([line.get_ydata()[-1] for line in ax.lines], [t.get_text() for t in ax.texts]))
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", capture)
    results = [make_result("e2e", 1, seed=s) for s in range(2)]
    results.append(make_result("e2e", 1, seed=2, reach=None, status="diverged"))
    learning_curves(results, "n", tmp_path)
    [(ends, notes)] = seen
    assert ends[0] == pytest.approx(0.9)  # the mean of the two ok runs only
    assert notes == ["e2e: 1 diverged (not shown)"]


def test_probe_heatmap_shows_the_initialisation_baseline(tmp_path: Path, monkeypatch) -> None:
    seen = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: seen.append(fig) or save(fig, path))
    results = [make_result("e2e", n, seed=0) for n in (1, 2)]
    results[1].probes_at_init = {p: 0.25 for p in results[1].probes}  # only n=2 has one
    assert len(probe_heatmap(results, "n", tmp_path)) == 1
    texts = [t.get_text() for t in seen[0].axes[0].texts]
    assert "0.50\n(0.25)" in texts  # n=2: after training, then at initialisation
    assert "0.50" in texts  # n=1: no baseline recorded
    assert seen[0].axes[1].get_ylabel() == "linear probe balanced accuracy"


def test_summary_interval_of_accuracy_stays_within_0_and_1() -> None:
    # two seeds far apart: the Student-t interval would reach below 0 and above 1
    (row,) = summarize([result("hinted", 2, 0, 0.75, None), result("hinted", 2, 1, 0.93, None)])
    assert row.accuracy.lo == 0.0 and row.accuracy.hi == 1.0
    assert row.accuracy.mean == pytest.approx(0.84)
