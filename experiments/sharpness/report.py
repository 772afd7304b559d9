"""Shared by the sharpness experiments: Kendall τ per measure, a table beside the paper's, plots."""

from __future__ import annotations

import json
from pathlib import Path

from scipy.stats import kendalltau

RESULTS = Path(__file__).resolve().parents[1] / "results" / "sharpness"
# Hide & Seek (arXiv 2505.05409), Kendall τ against the generalization gap, as reported
PAPER = {
    "diagonal networks": {"adaptive": -0.68, "geodesic-inv": -0.83, "geodesic-mix": -0.86},
    "ImageNet CLIP ViT-B/32 (72 models)": {
        "adaptive": -0.41,
        "geodesic-inv": -0.71,
        "geodesic-mix": -0.70,
    },
    "MNLI BERT (35 models)": {"adaptive": 0.06, "geodesic-inv": 0.28, "geodesic-mix": 0.38},
}
MEASURES = (
    ("plain", "plain", "inv"),
    ("adaptive", "adaptive", "inv"),
    ("geodesic-inv", "geodesic", "inv"),
    ("geodesic-mix", "geodesic", "mix"),
)


def kendall(values: list[float], gaps: list[float]) -> tuple[float, float]:
    result = kendalltau(values, gaps)
    return float(result.statistic), float(result.pvalue)


def tau_table(rows: list[dict], radii: list[float]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{f"rho={r}": {measure: (τ, p)}}`` over the models in ``rows``."""
    gaps = [row["gap"] for row in rows]
    return {
        f"rho={rho}": {
            label: kendall([row["sharpness"][f"{label}@{rho}"] for row in rows], gaps)
            for label, _, _ in MEASURES
        }
        for rho in radii
    }


def markdown(table: dict, paper: list[str]) -> str:
    labels = [label for label, _, _ in MEASURES]
    lines = ["| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, row in table.items():
        cells = [f"{row[label][0]:+.2f} (p={row[label][1]:.2g})" for label in labels]
        lines.append(f"| this run, {name} | " + " | ".join(cells) + " |")
    for name in paper:
        cells = [f"{PAPER[name][label]:+.2f}" if label in PAPER[name] else "—" for label in labels]
        lines.append(f"| paper: {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scatter(rows: list[dict], rho: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MEASURES), figsize=(4 * len(MEASURES), 3.4))
    gaps = [row["gap"] for row in rows]
    for ax, (label, _, _) in zip(axes, MEASURES, strict=True):
        values = [row["sharpness"][f"{label}@{rho}"] for row in rows]
        tau, _ = kendall(values, gaps)
        ax.scatter(values, gaps, s=12)
        ax.set_xscale("log")
        ax.set_title(f"{label}: τ = {tau:+.2f}")
        ax.set_xlabel(f"sharpness (ρ = {rho})")
    axes[0].set_ylabel("generalization gap")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def save(name: str, record: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
