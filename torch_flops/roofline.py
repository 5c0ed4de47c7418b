"""The roofline picture: arithmetic intensity (FLOPs per byte) against achieved TFLOP/s, log-log.

One point per timed node that did arithmetic and moved bytes, its area proportional to its time; the
``top`` costliest nodes (by time) are labelled. With the device's peaks, the two ceilings: the memory
roof ``TFLOP/s = intensity * B / 1000`` (B in GB/s) up to the ridge point ``1000 * P / B``, then the
compute roof ``P`` TFLOP/s. matplotlib is optional: ``pip install 'torch_flops[plot]'``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from torch_flops.records import NodeRecord
from torch_flops.throughput import Summary, for_nodes, ridge_point

MISSING_MATPLOTLIB = "plot_roofline needs matplotlib: pip install 'torch_flops[plot]' (or pip install matplotlib)"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)  # no display needed; keeps an interactive backend already chosen
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(MISSING_MATPLOTLIB) from error
    return plt


def plot_roofline(records: Sequence[NodeRecord], run: Summary, path: str | os.PathLike[str], top: int = 8,
                  title: str | None = None) -> None:
    """Write the picture to ``path``. Raises ``ValueError`` when no node has a time, FLOPs and bytes
    (a FLOPs-only or shape-only run), ``ImportError`` naming the extra when matplotlib is missing."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ValueError(f"top must be an int >= 0, got {top!r}")
    points = [
        (r, t) for r, t in zip(records, for_nodes(records, run.peak_tflops, run.peak_gbps))
        if t is not None and t.intensity and t.tflops > 0
    ]
    if not points:
        raise ValueError("no node has a time, FLOPs and bytes to plot: propagate with timing (not FLOPs-only or shape-only)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    try:
        x = [t.intensity for _, t in points]
        y = [t.tflops for _, t in points]
        longest = max(t.time_ms for _, t in points)
        sizes = [12 + 400 * t.time_ms / longest for _, t in points]
        colors = ["tab:red" if t.bound == "memory" else "tab:blue" if t.bound == "compute" else "tab:gray" for _, t in points]
        ax.scatter(x, y, s=sizes, c=colors, alpha=0.6, edgecolors="black", linewidths=0.4, zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo_x, hi_x = min(x) / 3, max(x) * 3
        peak, bandwidth = run.peak_tflops, run.peak_gbps
        if peak and bandwidth:
            ridge = ridge_point(peak, bandwidth)
            lo_x, hi_x = min(lo_x, ridge / 10), max(hi_x, ridge * 10)
            ax.plot([lo_x, ridge], [lo_x * bandwidth / 1000, peak], color="tab:red", lw=1.5, label=f"memory roof {bandwidth:g} GB/s")
            ax.plot([ridge, hi_x], [peak, peak], color="tab:blue", lw=1.5, label=f"compute roof {peak:g} TFLOP/s ({run.dtype_key})")
            ax.axvline(ridge, color="gray", lw=0.6, ls=":")
        elif peak:
            ax.axhline(peak, color="tab:blue", lw=1.5, label=f"compute roof {peak:g} TFLOP/s ({run.dtype_key})")
        elif bandwidth:
            ax.plot([lo_x, hi_x], [lo_x * bandwidth / 1000, hi_x * bandwidth / 1000], color="tab:red", lw=1.5,
                    label=f"memory roof {bandwidth:g} GB/s")
        ax.set_xlim(lo_x, hi_x)
        labels: list[tuple[float, float, list[str]]] = []  # nodes within 0.1 decade of each other share a label
        for record, t in sorted(points, key=lambda p: p[1].time_ms, reverse=True)[:top]:
            lx, ly = math.log10(t.intensity), math.log10(t.tflops)
            near = next((lab for lab in labels if abs(lab[0] - lx) < 0.1 and abs(lab[1] - ly) < 0.1), None)
            if near is None:
                labels.append((lx, ly, [record.name]))
            else:
                near[2].append(record.name)
        for i, (lx, ly, names) in enumerate(labels):
            offset = (6, 4) if i % 2 == 0 else (6, -10)  # alternate above and below: neighbours overlap less
            ax.annotate(", ".join(names), (10**lx, 10**ly), xytext=offset, textcoords="offset points", fontsize=7)
        for color, label in (("tab:red", "memory-bound node"), ("tab:blue", "compute-bound node")):
            if color in colors:
                ax.scatter([], [], s=30, c=color, alpha=0.6, edgecolors="black", linewidths=0.4, label=label)
        ax.set_xlabel("arithmetic intensity (FLOPs / byte read + written)")
        ax.set_ylabel("achieved TFLOP/s")
        where = run.peaks.name if run.peaks is not None else "no peaks known"
        mfu = f", MFU {100 * run.mfu:.2f} %" if run.mfu is not None else ""
        ax.set_title(title or f"roofline ({where}{mfu}); point area ~ node time", fontsize=10)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(os.fspath(path))
    finally:
        plt.close(fig)
