"""Report figures (``figures``) and the Markdown/HTML report page (``page``)."""

from e2elab.report.figures import (
    accuracy_vs_knob,
    all_figures,
    examples_to_threshold_vs_knob,
    learning_curves,
    probe_heatmap,
    strategy_colors,
)
from e2elab.report.page import write_report

__all__ = [
    "accuracy_vs_knob",
    "all_figures",
    "examples_to_threshold_vs_knob",
    "learning_curves",
    "probe_heatmap",
    "strategy_colors",
    "write_report",
]
