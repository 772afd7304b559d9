"""Shared by the experiments: a character corpus that ships with Python, and compiled packages.

The corpus is Python's own documentation (``pydoc_data.topics``, the text ``help()`` shows),
joined in sorted-key order, so every machine with CPython has the same bytes: no downloads.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
VOCAB = 64  # the 63 most frequent characters, and one token for every other character


def corpus() -> str:
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def encode(text: str) -> torch.Tensor:
    """Token ids: the ``VOCAB - 1`` most frequent characters (ties by code point), then other."""
    counts = Counter(text)
    common = sorted(counts, key=lambda c: (-counts[c], c))[: VOCAB - 1]
    table = {c: i for i, c in enumerate(common)}
    return torch.tensor([table.get(c, VOCAB - 1) for c in text], dtype=torch.long)


def split(ids: torch.Tensor, train_fraction: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    cut = int(len(ids) * train_fraction)
    return ids[:cut], ids[cut:]


def batch(ids: torch.Tensor, size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` random windows of ``length + 1`` tokens (inputs and next-token targets)."""
    starts = torch.randint(0, len(ids) - length - 1, (size,), generator=generator)
    return torch.stack([ids[s : s + length + 1] for s in starts.tolist()])


def windows(ids: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """``count`` evenly spaced windows: a fixed evaluation set."""
    step = (len(ids) - length - 1) // count
    return torch.stack([ids[i * step : i * step + length + 1] for i in range(count)])


def next_token_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
    )


def compile_spec(spec: Path, out: Path) -> None:
    """``symcomp compile`` the spec into ``out`` (the same command a user would run)."""
    command = [sys.executable, "-m", "symcomp", "compile", str(spec), "-o", str(out), "--force"]
    subprocess.run(command, check=True, capture_output=True, text=True)


@contextmanager
def package(spec_name: str):
    """The compiled package of ``experiments/specs/<spec_name>.yaml``, imported."""
    from symcomp.codegen.load import loaded_package

    out = HERE / "build" / spec_name.replace("-", "_")
    compile_spec(HERE / "specs" / f"{spec_name}.yaml", out)
    with loaded_package(out) as module:
        yield module
