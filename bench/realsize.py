"""The ``realsize`` benchmark section: ``symcomp reduce --hf`` on real-size random checkpoints
(GPT-2 small with transformers' GPT2Config defaults; a Llama as wide as TinyLlama, two layers),
run as a user would (a subprocess under ``/usr/bin/time -v``): wall time, peak resident memory
against the checkpoint's size (bound: 3x + 1 GB), the reduced model's log-probs against
transformers' (the float32 checkpoint recomputed in float64) and its parameter count against the
analysis. ``--quick``: the same on a tiny GPT-2 (one reduction: CI runs it)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _configs(quick: bool):
    import transformers

    if quick:
        return {
            "gpt2 (tiny)": transformers.GPT2Config(
                n_embd=32, n_layer=1, n_head=4, vocab_size=64, n_positions=16
            ),
        }
    return {
        "gpt2 small (124M)": transformers.GPT2Config(),
        "llama wide (hidden 2048, 2 layers)": transformers.LlamaConfig(
            hidden_size=2048,
            num_attention_heads=32,
            num_key_value_heads=4,
            intermediate_size=5632,
            num_hidden_layers=2,
            vocab_size=32000,
            max_position_embeddings=2048,
        ),
    }


def _peak_rss(stderr: str) -> int:
    """Bytes: ``/usr/bin/time -v``'s maximum resident set size (kB)."""
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(found.group(1)) * 1024 if found else 0


def bench_realsize(results, quick: bool) -> None:
    import torch
    import transformers

    from symcomp.hf.config_import import import_hf_config
    from symcomp.pipeline import analyze

    for label, config in _configs(quick).items():
        with tempfile.TemporaryDirectory() as tmp:
            folder, out = Path(tmp) / "checkpoint", Path(tmp) / "reduced_pkg"
            torch.manual_seed(0)
            hf = transformers.AutoModelForCausalLM.from_config(config).float().eval()
            hf.save_pretrained(folder)
            size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
            del hf
            argv = ["/usr/bin/time", "-v", sys.executable, "-m", "symcomp", "reduce"]
            argv += ["--hf", str(folder), "-o", str(out)]
            start = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                results.add("realsize", f"{label}: reduce failed", 0, "", note=done.stderr[-300:])
                continue
            peak = _peak_rss(done.stderr)
            bound = 3 * size + 2**30
            results.add("realsize", f"{label}: reduce wall time", wall, "s")
            results.add(
                "realsize",
                f"{label}: peak RSS / checkpoint",
                peak / size,
                "×",
                target="≤ 3× + 1 GB",
                met=peak <= bound,
                note=f"{peak / 2**30:.2f} GiB for a {size / 2**30:.2f} GiB checkpoint",
            )
            sys.path.insert(0, str(out.parent))
            try:
                import importlib

                pkg = importlib.import_module(out.name)
                reduced = pkg.ReducedModel.from_pretrained(out, dtype=torch.float64)
                hf = transformers.AutoModelForCausalLM.from_pretrained(folder)
                hf = hf.to(torch.float64).eval()
                vocab = config.vocab_size
                ids = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))
                with torch.no_grad():
                    expected = torch.log_softmax(hf(input_ids=ids).logits, dim=-1)
                    got = reduced.log_probs(ids)
                error = float((got - expected).abs().max())
                count = sum(p.numel() for p in reduced.parameters())
                analysis = analyze(import_hf_config(folder))
            finally:
                sys.path.remove(str(out.parent))
                sys.modules.pop(out.name, None)
            results.add(
                "realsize",
                f"{label}: reduced log-probs vs transformers (float64)",
                error,
                "",
                target="≤ 1e-4",
                met=error <= 1e-4,
            )
            results.add(
                "realsize",
                f"{label}: reduced parameters",
                count,
                "",
                target=f"= {analysis.parameters:,} − {analysis.redundant:,}",
                met=count == analysis.parameters - analysis.redundant,
            )
