"""The results chart (matplotlib, Agg): CPU per request and added latency per configuration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench.configs import DIRECT, FULL, PASSTHROUGH
from bench.report import Summary, added, load_row, stream_row

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _proxies(summary: Summary) -> list[str]:
    return [row.config for row in summary.streams if row.config != DIRECT]


def _cpu_panel(ax: Axes, summary: Summary) -> None:
    configs = _proxies(summary)
    levels = sorted({row.concurrency for row in summary.loads})
    width = 0.8 / max(len(levels), 1)
    for i, level in enumerate(levels):
        values = [
            (row.cpu_ms if (row := load_row(summary, c, level)) and row.cpu_ms else 0.0)
            for c in configs
        ]
        positions = [x + i * width for x in range(len(configs))]
        ax.bar(positions, values, width, label=f"c={level}")
    ref = load_row(summary, PASSTHROUGH, 16) or load_row(summary, PASSTHROUGH, levels[0])
    if ref and ref.cpu_ms:
        limit = ref.cpu_ms * 1.3
        ax.axhline(limit, color="red", ls="--", lw=1, label="1.3x pass-through c=16 (target)")
    _labels(ax, configs, width * (len(levels) - 1) / 2, "CPU ms per request (proxy process)")


def _latency_panel(ax: Axes, summary: Summary) -> None:
    configs = _proxies(summary)
    p50, p99, ttfe = [], [], []
    direct_stream = stream_row(summary, DIRECT)
    for config in configs:
        row = load_row(summary, config, 1)
        p50.append((added(summary, row, lambda r: r.p50_ms) or 0.0) if row else 0.0)
        p99.append((added(summary, row, lambda r: r.p99_ms) or 0.0) if row else 0.0)
        srow = stream_row(summary, config)
        ttfe.append(srow.ttfe_ms - direct_stream.ttfe_ms if srow and direct_stream else 0.0)
    width = 0.27
    for i, (label, values) in enumerate(
        (("+p50 c=1", p50), ("+p99 c=1", p99), ("+TTFE stream", ttfe))
    ):
        positions = [x + i * width for x in range(len(configs))]
        ax.bar(positions, values, width, label=label)
    for limit, colour, label in ((0.8, "orange", "p50 target"), (2.0, "red", "p99 target")):
        ax.axhline(limit, color=colour, ls="--", lw=1, label=label)
    _labels(ax, configs, width, "added latency over direct, ms")


def _log_if_spread(ax: Axes) -> None:
    """A log scale when one configuration (LiteLLM) dwarfs the others, so theirs stay readable."""
    from matplotlib.patches import Rectangle

    bars = [patch for patch in ax.patches if isinstance(patch, Rectangle)]
    heights = [bar.get_height() for bar in bars if bar.get_height() > 0]
    if heights and max(heights) > 100 * min(heights):
        ax.set_yscale("log")


def _labels(ax: Axes, configs: list[str], offset: float, title: str) -> None:
    _log_if_spread(ax)
    ax.set_xticks([x + offset for x in range(len(configs))])
    ax.set_xticklabels(configs, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def write_chart(summary: Summary, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cpu, latency) = plt.subplots(1, 2, figsize=(12, 4.8))
    _cpu_panel(cpu, summary)
    _latency_panel(latency, summary)
    fig.suptitle(f"{title} — {FULL} is the configuration under target", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
