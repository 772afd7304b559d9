"""Quotient training on a character LM: plain Adam, Adam made horizontal, Adam on the reduced model.

    python experiments/quotient_training.py            # the full run (results/quotient_training*)
    python experiments/quotient_training.py --quick    # a smoke run, a minute
    # the same full run on two cores: one process per spec, then the report alone
    python experiments/quotient_training.py --spec char-gpt2 &
    python experiments/quotient_training.py --spec char-llama; wait
    python experiments/quotient_training.py --report

For each spec (a tiny GPT-2-style and a tiny Llama-style model, ``experiments/specs``) and each
seed, every arm starts from the same initialisation and sees the same batches:

- ``adam``: Adam on the standard ``Model``;
- ``quotient``: ``QuotientOptimizer(model, Adam)``, each update projected onto the horizontal
  space of every group jointly (the package's ``project_horizontal``);
- ``quotient-heads``: the same with ``projection="heads"``, the per-head gauges alone;
- ``reduced``: Adam on ``ReducedModel.from_standard(model)``, the gauge-fixed model.

It records train and validation loss, the time per step, steps to a target validation loss, and
the seed-to-seed spread of invariant statistics (singular values of the QK and OV circuits)
against that of raw-weight statistics (singular values of the head blocks of W_Q, W_K, W_V, W_O).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import torch
from common import HERE, batch, corpus, encode, next_token_loss, package, split, windows
from symcomp_runtime import actions
from symcomp_runtime.optim import QuotientOptimizer

SPECS = ("char-gpt2", "char-llama")
ARMS = ("adam", "quotient", "quotient-heads", "reduced")
RESULTS = HERE / "results"


@dataclass
class Run:
    spec: str
    arm: str
    seed: int
    steps: list[int] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    seconds_per_step: float = 0.0
    stats: dict[str, list[float]] = field(default_factory=dict)


def make_optimizer(pkg, model, arm: str, lr: float):
    """(the module that is trained, its optimizer)."""
    if arm == "reduced":
        reduced = pkg.ReducedModel.from_standard(model)
        return reduced, torch.optim.Adam(reduced.parameters(), lr=lr)
    inner = torch.optim.Adam(model.parameters(), lr=lr)
    if arm == "adam":
        return model, inner
    projection = "heads" if arm == "quotient-heads" else "joint"
    # the joint projection stops at a relative residual of 1e-8: ample for a training step
    return model, QuotientOptimizer(model, inner, projection=projection, tol=1e-8)


def train(pkg, spec: str, arm: str, seed: int, data, args) -> Run:
    train_ids, val_set = data
    torch.manual_seed(seed)
    model = pkg.Model(dtype=torch.float64)  # the package's own initialisation, seeded
    trained, optimizer = make_optimizer(pkg, model, arm, args.lr)
    generator = torch.Generator().manual_seed(1000 + seed)  # the same batches for every arm
    run, recent, elapsed = Run(spec, arm, seed), [], 0.0
    for step in range(1, args.steps + 1):
        tokens = batch(train_ids, args.batch, args.context, generator)
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = next_token_loss(trained, tokens)
        loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - start
        recent.append(float(loss.detach()))
        if step % args.eval_every == 0:
            with torch.no_grad():
                val = float(next_token_loss(trained, val_set))
            run.steps.append(step)
            run.train.append(statistics.fmean(recent))
            run.val.append(val)
            recent = []
    run.seconds_per_step = elapsed / args.steps
    standard = trained.to_standard() if arm == "reduced" else trained
    run.stats = head_statistics(pkg, standard)
    return run


def head_statistics(pkg, model) -> dict[str, list[float]]:
    """Per layer, the singular values of every head's QK and OV circuit (invariant) and of its
    W_Q, W_K, W_V, W_O blocks (not), each sorted over the heads (heads can be permuted)."""
    circuits = importlib.import_module(f"{pkg.__name__}.invariants")  # the module, not the function
    S = actions.as_sizes(model.sizes)
    k, group = S["head_width"], S["heads"] // S["kv_heads"]
    out: dict[str, list[float]] = {}
    with torch.no_grad():
        for layer in range(S["layers"]):
            attn = model.layers[layer].attn
            values: dict[str, list[torch.Tensor]] = {}
            for h in range(S["heads"]):
                blocks = {
                    "qk": circuits.qk_circuit(model, layer, h).singular_values(),
                    "ov": circuits.ov_circuit(model, layer, h).singular_values(),
                    "W_Q": _svd(attn.W_Q[:, h * k : (h + 1) * k]),
                    "W_K": _svd(attn.W_K[:, (h // group) * k : (h // group + 1) * k]),
                    "W_V": _svd(attn.W_V[:, (h // group) * k : (h // group + 1) * k]),
                    "W_O": _svd(attn.W_O[h * k : (h + 1) * k, :]),
                }
                for name, sv in blocks.items():
                    values.setdefault(name, []).append(sv[:k])
            for name, svs in values.items():
                flat = torch.cat(svs).sort(descending=True).values
                out.setdefault(name, []).extend(flat.tolist())
    return out


def _svd(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(matrix)


def spread(runs: list[Run], name: str) -> float:
    """Mean over entries of the coefficient of variation across seeds of statistic ``name``."""
    table = torch.tensor([run.stats[name] for run in runs])
    return float((table.std(0) / table.mean(0).abs()).mean())


def steps_to(run: Run, target: float) -> int | None:
    return next((s for s, v in zip(run.steps, run.val, strict=True) if v <= target), None)


def summarise(runs: list[Run]) -> dict:
    summary: dict = {}
    for spec in SPECS:
        by_arm = {arm: [r for r in runs if r.spec == spec and r.arm == arm] for arm in ARMS}
        by_arm = {arm: group for arm, group in by_arm.items() if group}  # an arm not run
        adam = by_arm["adam"]
        half = len(adam[0].val) // 2 - 1
        target = statistics.median(r.val[half] for r in adam)
        rows = {}
        for arm, group in by_arm.items():
            finals = [r.val[-1] for r in group]
            reached = [s for r in group if (s := steps_to(r, target)) is not None]
            rows[arm] = {
                "final_val_mean": statistics.fmean(finals),
                "final_val_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                "steps_to_target_mean": statistics.fmean(reached) if reached else None,
                "steps_to_target_std": statistics.stdev(reached) if len(reached) > 1 else 0.0,
                "reached": f"{len(reached)}/{len(group)}",
                "seconds_per_step": statistics.fmean(r.seconds_per_step for r in group),
                "spread": {name: spread(group, name) for name in group[0].stats},
            }
        summary[spec] = {"target": target, "target_step": adam[0].steps[half], "arms": rows}
    return summary


def plot(runs: list[Run], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SPECS), figsize=(6 * len(SPECS), 4), sharey=True)
    colours = dict(zip(ARMS, ("tab:blue", "tab:red", "tab:orange", "tab:green"), strict=True))
    for ax, spec in zip(axes, SPECS, strict=True):
        for arm in ARMS:
            group = [r for r in runs if r.spec == spec and r.arm == arm]
            if not group:
                continue
            steps = group[0].steps
            for key, style in (("val", "-"), ("train", ":")):
                curves = torch.tensor([getattr(r, key) for r in group])
                mean, std = curves.mean(0), curves.std(0)
                label = f"{arm} ({key})"
                ax.plot(steps, mean, style, color=colours[arm], label=label)
                if key == "val":
                    ax.fill_between(steps, mean - std, mean + std, color=colours[arm], alpha=0.2)
        seeds = len({r.seed for r in runs if r.spec == spec})
        ax.set_title(f"{spec}: loss, mean ± std over {seeds} seeds")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("next-character cross-entropy (nats)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 40 steps: a smoke run")
    parser.add_argument("--spec", choices=SPECS, help="train this spec only, without the report")
    parser.add_argument("--report", action="store_true", help="only the report, from saved runs")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=15)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.eval_every = 2, 40, 10
    stem = "quotient_training_quick" if args.quick else "quotient_training"
    RESULTS.mkdir(exist_ok=True)
    for spec in [] if args.report else [args.spec] if args.spec else SPECS:
        runs = train_spec(spec, args)
        record = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "args": vars(args)}
        record["runs"] = [asdict(r) for r in runs]
        part = "" if args.arms == list(ARMS) else "_" + "+".join(args.arms)
        (RESULTS / f"{stem}_{spec}{part}.json").write_text(json.dumps(record, indent=1) + "\n")
    if args.spec:
        return
    files = [f for spec in SPECS for f in sorted(RESULTS.glob(f"{stem}_{spec}*.json"))]
    saved = [json.loads(f.read_text()) for f in files]
    runs = [Run(**r) for record in saved for r in record["runs"]]
    summary = summarise(runs)
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(runs, RESULTS / f"{stem}.png")
    (RESULTS / f"{stem}.md").write_text(tables(summary))
    print(tables(summary))


def tables(summary: dict) -> str:
    """The summary as markdown: one table per spec."""
    lines = []
    for spec, entry in summary.items():
        lines += [
            f"**{spec}** (target: validation loss {entry['target']:.4f}, the median plain-Adam "
            f"value at step {entry['target_step']})",
            "",
            "| arm | final val loss | steps to target | reached | ms / step "
            "| spread: QK / OV circuits | spread: W_Q / W_K / W_V / W_O |",
            "|---|---|---|---|---|---|---|",
        ]
        for arm, row in entry["arms"].items():
            to = row["steps_to_target_mean"]
            steps = "—" if to is None else f"{to:.0f} ± {row['steps_to_target_std']:.0f}"
            sp = row["spread"]
            raw = " / ".join(f"{sp[name]:.3f}" for name in ("W_Q", "W_K", "W_V", "W_O"))
            lines.append(
                f"| {arm} | {row['final_val_mean']:.4f} ± {row['final_val_std']:.4f} | {steps} "
                f"| {row['reached']} | {1000 * row['seconds_per_step']:.0f} "
                f"| {sp['qk']:.3f} / {sp['ov']:.3f} | {raw} |"
            )
        lines.append("")
    return "\n".join(lines)


def train_spec(spec: str, args) -> list[Run]:
    """Every seed and arm of one spec."""
    torch.set_num_threads(1)
    ids = encode(corpus())
    train_ids, val_ids = split(ids)
    data = (train_ids, windows(val_ids, 128, args.context))
    runs: list[Run] = []
    started = time.perf_counter()
    with package(spec) as pkg:
        for seed in range(args.seeds):
            for arm in args.arms:
                run = train(pkg, spec, arm, seed, data, args)
                runs.append(run)
                print(
                    f"[{time.perf_counter() - started:6.0f} s] {spec} seed {seed} {arm:>14}: "
                    f"val {run.val[-1]:.4f}, {1000 * run.seconds_per_step:.1f} ms/step",
                    flush=True,
                )
    return runs


if __name__ == "__main__":
    main()
