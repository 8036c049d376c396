"""PNG plots for reports (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def curve(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    intervals: Mapping[str, Sequence[Sequence[float]]] | None = None,
) -> Path:
    """One line per series ``name -> (xs, ys)``; ``intervals[name]`` (one ``[low, high]`` per point) draws
    error bars."""
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, (xs, ys) in series.items():
        ci = (intervals or {}).get(name)
        err = None if ci is None else np.abs(np.array(ci, dtype=float).T - np.array(ys, dtype=float))
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def heatmap(path: str | Path, matrix: np.ndarray, labels: Sequence[str], title: str, fmt: str = "{:.2f}") -> Path:
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 0.8 + 0.5 * len(labels)), dpi=120)
    im = ax.imshow(matrix, cmap="viridis", vmin=np.nanmin(matrix), vmax=np.nanmax(matrix))
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=6, color="w")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
