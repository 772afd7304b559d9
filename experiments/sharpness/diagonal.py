"""Geodesic sharpness on diagonal linear networks, against the generalization gap.

    python experiments/sharpness/diagonal.py            # the full run
    python experiments/sharpness/diagonal.py --quick    # a smoke run

The predictor is ``β = u ⊙ v`` (``u, v ∈ R^D``), unchanged by ``(u, v) -> (u ⊙ a, v / a)``:
``D`` GL(1) pairs, so ``symcomp_runtime.sharpness`` takes index tensors ``(D, 1, 1)`` into
``θ = [u; v]``. Data: sparse regression with fewer samples than dimensions. Models: SGD on the
squared loss from ``u = v = α 1``, over a grid of initialisation scales ``α``, learning rates and
batch sizes (small ``α`` finds sparse, well-generalizing solutions; large ``α`` the ℓ2-like ones).
Each model's sharpness (plain, adaptive, geodesic-inv, geodesic-mix) is measured on its training
set and ranked against its gap, test loss minus train loss (Kendall τ).
"""

from __future__ import annotations

import argparse
import itertools
import time
from datetime import UTC, datetime

import torch
from report import MEASURES, RESULTS, markdown, save, scatter, tau_table
from symcomp_runtime.sharpness import sharpness

D, SPARSITY, N_TRAIN, N_TEST, NOISE = 60, 5, 30, 1000, 0.1


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    beta = torch.zeros(D, dtype=torch.float64)
    beta[torch.randperm(D, generator=g)[:SPARSITY]] = torch.randn(SPARSITY, generator=g).double()
    X = torch.randn(N_TRAIN + N_TEST, D, generator=g, dtype=torch.float64)
    y = X @ beta + NOISE * torch.randn(N_TRAIN + N_TEST, generator=g, dtype=torch.float64)
    return (X[:N_TRAIN], y[:N_TRAIN]), (X[N_TRAIN:], y[N_TRAIN:])


def mse(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((X @ (theta[:D] * theta[D:]) - y) ** 2).mean()


def train(alpha: float, lr: float, batch: int, seed: int, train_set, steps: int):
    """SGD from ``u = v = α 1``; None if it diverged."""
    X, y = train_set
    theta = torch.full((2 * D,), alpha, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randperm(N_TRAIN, generator=g)[:batch]
        (grad,) = torch.autograd.grad(mse(theta, X[rows], y[rows]), theta)
        with torch.no_grad():
            theta -= lr * grad
        if not torch.isfinite(theta).all():
            return None
    return theta.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--ascent-steps", type=int, default=20)
    args = parser.parse_args()
    alphas = (0.01, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)
    lrs, batches, seeds = (0.02, 0.05), (5, 15, 30), (0, 1)
    radii = (0.05, 0.2)
    if args.quick:
        alphas, lrs, batches, seeds, args.steps, args.ascent_steps = (
            (0.05, 0.7),
            (0.05,),
            (10,),
            (0, 1),
            300,
            5,
        )
    torch.set_num_threads(1)
    train_set, test_set = data()
    pairs = [(torch.arange(D).view(D, 1, 1), (D + torch.arange(D)).view(D, 1, 1))]
    rows, started = [], time.perf_counter()
    grid = list(itertools.product(alphas, lrs, batches, seeds))
    for i, (alpha, lr, batch, seed) in enumerate(grid):
        theta = train(alpha, lr, batch, seed, train_set, args.steps)
        if theta is None:
            print(f"[{i + 1}/{len(grid)}] α={alpha} lr={lr} batch={batch}: diverged, left out")
            continue
        train_loss, test_loss = float(mse(theta, *train_set)), float(mse(theta, *test_set))
        row = {
            "alpha": alpha,
            "lr": lr,
            "batch": batch,
            "seed": seed,
            "train": train_loss,
            "test": test_loss,
            "gap": test_loss - train_loss,
            "sharpness": {},
        }
        for rho in radii:
            for label, measure, metric in MEASURES:
                result = sharpness(
                    lambda t: mse(t, *train_set),
                    theta,
                    pairs,
                    measure=measure,
                    metric=metric,
                    rho=rho,
                    steps=args.ascent_steps,
                )
                row["sharpness"][f"{label}@{rho}"] = result.value
        rows.append(row)
        print(
            f"[{i + 1}/{len(grid)} {time.perf_counter() - started:5.0f} s] α={alpha} lr={lr} "
            f"batch={batch} seed={seed}: train {train_loss:.2e} gap {row['gap']:.3f}",
            flush=True,
        )
    table = tau_table(rows, list(radii))
    name = "diagonal_quick" if args.quick else "diagonal"
    save(
        name,
        {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "args": vars(args),
            "tau": table,
            "models": rows,
        },
    )
    scatter(rows, radii[-1], RESULTS / f"{name}.png", f"diagonal networks, {len(rows)} models")
    print(markdown(table, ["diagonal networks"]))


if __name__ == "__main__":
    main()
