"""The gradient-SNR figure: log10 SNR per module against the complexity knob."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from e2elab.records import SNRResult

FLOAT32_EPS = 2.0**-23  # float32's relative precision (torch.finfo(torch.float32).eps)

# knob values spanning this factor or more go on a log axis
LOG_SPAN = 20


def snr_figure(results: list[SNRResult], knob: str, path: Path) -> Path:
    """One panel per module, one line per strategy;
    mean log10 SNR over initialisations with its 95% interval as a band. An open
    downward triangle marks an upper bound (the SNR was below resolution); the band
    leaves bounds out."""
    modules = list(dict.fromkeys(m for r in results for m in r.per_init))
    # one line per strategy and value of every other knob that varies (e.g. m)
    others = sorted(
        {k for r in results for k in r.knobs if k != knob}
        - {k for k in results[0].knobs if len({str(r.knobs.get(k)) for r in results}) == 1}
    )

    def series(r: SNRResult) -> str:
        return ", ".join([r.strategy, *(f"{k}={r.knobs.get(k)}" for k in others)])

    strategies = list(dict.fromkeys(series(r) for r in results))
    columns = min(3, len(modules))
    rows_count = math.ceil(len(modules) / columns)
    fig, grid = plt.subplots(
        rows_count, columns, figsize=(4.6 * columns, 3.4 * rows_count + 0.6), squeeze=False
    )
    axes = grid.ravel()
    for ax in axes[len(modules) :]:
        ax.set_visible(False)
    colors = plt.get_cmap("tab10")
    for ax, module in zip(axes, modules, strict=False):
        for i, strategy in enumerate(strategies):
            rows = sorted(
                (r.knobs[knob], *r.log10_summary(module), r.is_bound(module))
                for r in results
                if series(r) == strategy and module in r.per_init
            )
            if not rows:
                continue
            xs, means, los, his, bounds = zip(*rows, strict=True)
            ax.plot(xs, means, "-", color=colors(i), label=strategy)
            for x, y, bound in zip(xs, means, bounds, strict=True):
                ax.plot(x, y, "v" if bound else "o", color=colors(i), mfc="none" if bound else None)
            # the band only spans resolved points: an interval around an upper bound means nothing
            resolved = [not b for b in bounds]
            ax.fill_between(xs, los, his, where=resolved, color=colors(i), alpha=0.2)
        ax.axhline(
            math.log10(FLOAT32_EPS),
            color="grey",
            ls="--",
            lw=1,
            label="float32 precision (log10 eps)",
        )
        ax.set_title(f"module {module}")
        ax.set_xlabel(knob)
        ax.set_ylabel("log10 gradient SNR")
        ax.grid(alpha=0.3)
        values = sorted({r.knobs[knob] for r in results})
        if values[0] > 0 and values[-1] / values[0] >= LOG_SPAN:
            ax.set_xscale("log")  # e.g. stocks' k = 10, 1000, 2000
            ax.set_xticks(values, [str(v) for v in values])
            ax.set_xlim(values[0] / 1.5, values[-1] * 1.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            pad = 0.05 * (values[-1] - values[0] or 1)
            ax.set_xlim(values[0] - pad, values[-1] + pad)
    handles, labels = axes[0].get_legend_handles_labels()
    if any(r.is_bound(m) for r in results for m in r.per_init):
        handles.append(plt.Line2D([], [], ls="none", marker="v", mfc="none", color="black"))
        labels.append("upper bound (SNR below resolution)")
    # at most two legend entries a row on a one-panel figure, so that none is cut off
    ncol = len(labels) if columns > 1 else min(2, len(labels))
    legend_rows = math.ceil(len(labels) / ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
    task = results[0].task if results else ""
    fig.suptitle(f"{task}: gradient signal-to-noise at initialisation")
    fig.set_figheight(fig.get_figheight() + 0.25 * (legend_rows - 1))
    fig.tight_layout(rect=(0, (0.35 + 0.25 * legend_rows) / fig.get_figheight(), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
