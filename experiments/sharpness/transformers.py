"""Geodesic sharpness on a family of tiny transformers, against the generalization gap.

    python experiments/sharpness/transformers.py            # the full run
    python experiments/sharpness/transformers.py --quick    # a smoke run

A GPT-2-style character LM (``experiments/specs/char-gpt2.yaml``: learned positions, so both
per-head gauges are full GL(k) pairs the geodesic measure quotients), trained with AdamW on a
small slice of Python's documentation so that models overfit by different amounts, over a grid of
learning rates, batch sizes, weight decays and seeds. Gap: held-out loss minus training loss.
Each model's plain, adaptive, geodesic-inv and geodesic-mix sharpness is measured on a fixed set
of training sequences (float64) and ranked against its gap (Kendall τ).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/common.py

from common import batch, corpus, encode, next_token_loss, package, split, windows
from report import MEASURES, RESULTS, markdown, save, scatter, tau_table
from symcomp_runtime.sharpness import lm_loss, model_sharpness

TRAIN_CHARS, CONTEXT = 20_000, 32


def train(pkg, lr: float, size: int, decay: float, seed: int, train_ids, steps: int):
    torch.manual_seed(seed)
    model = pkg.Model(dtype=torch.float64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        next_token_loss(model, batch(train_ids, size, CONTEXT, g)).backward()
        optimizer.step()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--ascent-steps", type=int, default=10)
    args = parser.parse_args()
    lrs, sizes, decays, seeds = (1e-3, 3e-3, 1e-2), (8, 32), (0.0, 0.3), (0, 1)
    radii = (0.02, 0.1)
    if args.quick:
        lrs, sizes, decays, seeds, args.steps, args.ascent_steps = (
            (3e-3,),
            (8,),
            (0.0, 0.3),
            (0,),
            30,
            3,
        )
    torch.set_num_threads(1)
    ids = encode(corpus())
    train_all, val_ids = split(ids)
    train_ids = train_all[:TRAIN_CHARS]
    train_eval, val_eval = windows(train_ids, 128, CONTEXT), windows(val_ids, 128, CONTEXT)
    probe = windows(train_ids, 16, CONTEXT)  # the sequences sharpness is measured on
    rows, started = [], time.perf_counter()
    grid = list(itertools.product(lrs, sizes, decays, seeds))
    with package("char-gpt2") as pkg:
        for i, (lr, size, decay, seed) in enumerate(grid):
            model = train(pkg, lr, size, decay, seed, train_ids, args.steps)
            with torch.no_grad():
                train_loss = float(next_token_loss(model, train_eval))
                val_loss = float(next_token_loss(model, val_eval))
            row = {
                "lr": lr,
                "batch": size,
                "weight_decay": decay,
                "seed": seed,
                "train": train_loss,
                "val": val_loss,
                "gap": val_loss - train_loss,
                "sharpness": {},
            }
            loss = lm_loss(model, probe)
            for rho in radii:
                for label, measure, metric in MEASURES:
                    result = model_sharpness(
                        model,
                        loss,
                        measure=measure,
                        metric=metric,
                        rho=rho,
                        steps=args.ascent_steps,
                    )
                    row["sharpness"][f"{label}@{rho}"] = result.value
            rows.append(row)
            print(
                f"[{i + 1}/{len(grid)} {time.perf_counter() - started:5.0f} s] lr={lr} "
                f"batch={size} wd={decay} seed={seed}: train {train_loss:.3f} "
                f"gap {row['gap']:.3f}",
                flush=True,
            )
    table = tau_table(rows, list(radii))
    name = "transformers_quick" if args.quick else "transformers"
    save(
        name,
        {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "args": vars(args),
            "tau": table,
            "models": rows,
        },
    )
    scatter(rows, radii[-1], RESULTS / f"{name}.png", f"tiny transformers, {len(rows)} models")
    print(markdown(table, ["ImageNet CLIP ViT-B/32 (72 models)", "MNLI BERT (35 models)"]))


if __name__ == "__main__":
    main()
