"""``symcomp reduce --hf``: tiny transformers checkpoints of the nine families, saved with
``save_pretrained``, reduced by the CLI, loaded back from the generated package and compared with
transformers itself."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from symcomp.hf import from_transformers
from symcomp.hf.config_import import import_hf_config
from symcomp.pipeline import analyze
from symcomp.verify.nullity import measure_nullity

try:
    import hf_tiny
except ImportError:  # tests/ became a package
    from tests import hf_tiny

FAMILIES = list(hf_tiny.FAMILIES)
ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _saved(family: str, folder: Path) -> Path:
    """A tiny random checkpoint of ``family``, as save_pretrained writes it."""
    hf_tiny.build(family, float64_norms=False).save_pretrained(folder)
    return folder


def _reload(folder: Path):
    """The checkpoint loaded by transformers (SDPA), with its two float32 islands lifted to
    float64 by the same formulas: the RMSNorms and the RoPE cos/sin tables (as shipped they
    differ from float64 by about 1e-7, see test_ir.py)."""
    config = transformers.AutoConfig.from_pretrained(folder)
    auto = transformers.AutoModelForCausalLM
    if config.model_type == "bert":
        auto = transformers.BertForMaskedLM
    model = auto.from_pretrained(folder, attn_implementation="sdpa")
    model = model.to(torch.float64).eval()
    hf_tiny.float64_norms_(model)
    hf_tiny.float64_rope_(model)
    return model


def _import(out: Path):
    sys.path.insert(0, str(out.parent))
    try:
        return importlib.import_module(out.name)
    finally:
        sys.path.remove(str(out.parent))


def _without_transformers(*argv: str) -> tuple[int, str, str]:
    """The CLI in a fresh interpreter where importing transformers fails."""
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "from symcomp.cli import main\n"
        f"main({list(argv)!r})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    return done.returncode, done.stdout, done.stderr


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (3, hf_tiny.T), generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("family", FAMILIES)
def test_reduce_reproduces_transformers(family, run_cli, tmp_path):
    folder = _saved(family, tmp_path / "checkpoint")
    out = tmp_path / f"reduced_{family}"
    if family == "gpt2":  # once, as a user without transformers would run it
        code, stdout, stderr = _without_transformers("reduce", "--hf", str(folder), "-o", str(out))
    else:
        code, stdout, stderr = run_cli("reduce", "--hf", str(folder), "-o", str(out))
    assert code == 0, stderr
    spec = import_hf_config(folder)
    analysis = analyze(spec)
    assert f"{analysis.reduced_parameters:,}" in stdout  # the before/after table
    assert {"standard.safetensors", "reduced.safetensors", "spec.yaml"} <= {
        p.name for p in out.iterdir()
    }
    # the original config, for `symcomp export` (tests/test_hf_export.py)
    assert (out / "hf_config.json").read_text() == (folder / "config.json").read_text()
    pkg = _import(out)
    hf = _reload(folder)
    ids = _ids(spec.architecture.vocab_size)
    with torch.no_grad():
        expected = torch.log_softmax(hf(input_ids=ids).logits, dim=-1)
        standard = pkg.Model.from_pretrained(out)
        reduced = pkg.ReducedModel.from_pretrained(out)
        assert standard.get_parameter("embed.W_E").dtype == torch.float64  # as stored
        assert float((standard.log_probs(ids) - expected).abs().max()) <= TOL
        assert float((reduced.log_probs(ids) - expected).abs().max()) <= TOL
    assert sum(p.numel() for p in reduced.parameters()) == analysis.reduced_parameters
    assert sum(p.numel() for p in standard.parameters()) == sum(p.numel() for p in hf.parameters())
    # ground truth for the count: the Jacobian nullity of the transformers model itself
    measurement, _ = measure_nullity(
        hf_tiny.logprob_fn(hf),
        hf_tiny.hf_params(hf),
        vocab=spec.architecture.vocab_size,
        seq_len=spec.architecture.max_positions,
        generator=torch.Generator().manual_seed(7),
    )
    assert measurement.nullity == analysis.redundant


def test_from_transformers_and_the_reduced_model(tmp_path):
    hf = hf_tiny.build("llama")
    hf_tiny.float64_rope_(hf)
    model, reduced, package = from_transformers(hf, tmp_path / "llama_package")
    assert isinstance(model, package.Model) and isinstance(reduced, package.ReducedModel)
    ids = _ids(hf.config.vocab_size)
    with torch.no_grad():
        expected = torch.log_softmax(hf(input_ids=ids).logits, dim=-1)
        assert float((model.log_probs(ids) - expected).abs().max()) <= TOL
        assert float((reduced.log_probs(ids) - expected).abs().max()) <= TOL
    kept = sum(p.numel() for p in reduced.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert 0 < kept < total


def test_a_missing_or_truncated_checkpoint_is_a_clear_error(run_cli, tmp_path):
    folder = _saved("gpt2", tmp_path / "checkpoint")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code, _, err = run_cli("reduce", "--hf", str(folder), "-o", str(out))
    assert code == 2 and "model.safetensors" in err and "truncated" in err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # nothing half-written
    weights.unlink()
    code, _, err = run_cli("reduce", "--hf", str(folder), "-o", str(out))
    assert code == 2 and "no model.safetensors" in err and not out.exists()


def test_a_tensor_the_family_does_not_have_is_named(run_cli, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _saved("gpt2", tmp_path / "checkpoint")
    tensors = load_file(folder / "model.safetensors")
    tensors["transformer.h.0.attn.extra.weight"] = torch.zeros(2, 2, dtype=torch.float64)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    code, _, err = run_cli("reduce", "--hf", str(folder), "-o", str(tmp_path / "out"))
    assert code == 2 and "transformer.h.0.attn.extra.weight" in err
    assert not (tmp_path / "out").exists()


def test_an_unsupported_family_is_a_clear_error(run_cli, tmp_path):
    folder = _saved("gpt2", tmp_path / "checkpoint")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "t5"
    (folder / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli("reduce", "--hf", str(folder), "-o", str(tmp_path / "out"))
    assert code == 2 and "t5" in err and "model_type" in err
    assert not (tmp_path / "out").exists()


def test_a_sharded_checkpoint_streams_and_dtype_chooses_the_output(run_cli, tmp_path):
    """Two shards and their index, as save_pretrained writes a large model: read
    memory-mapped, reduced; ``--dtype float32`` writes float32 where the checkpoint holds float64
    (the default keeps the checkpoint's type: test_reduce_reproduces_transformers)."""
    from safetensors.torch import load_file, save_file

    folder = _saved("gpt2", tmp_path / "checkpoint")
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, folder / shard, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, shard)
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    hf = _reload(folder)
    spec = import_hf_config(folder)
    ids = _ids(spec.architecture.vocab_size)
    with torch.no_grad():
        expected = torch.log_softmax(hf(input_ids=ids).logits, dim=-1)
    for dtype, tol in (("float32", 1e-4),):
        out = tmp_path / f"reduced_{dtype}"
        argv = ("reduce", "--hf", str(folder), "-o", str(out))
        code, _, stderr = run_cli(*argv, *(("--dtype", dtype) if dtype else ()))
        assert code == 0, stderr
        pkg = _import(out)
        reduced = pkg.ReducedModel.from_pretrained(out)
        stored = getattr(torch, dtype) if dtype else torch.float64
        assert reduced.free["embed__W_E"].dtype == stored
        assert pkg.Model.from_pretrained(out).get_parameter("embed.W_E").dtype == stored
        with torch.no_grad():
            got = pkg.ReducedModel.from_pretrained(out, dtype=torch.float64).log_probs(ids)
        assert float((got - expected).abs().max()) <= tol
        assert sum(p.numel() for p in reduced.parameters()) == analyze(spec).reduced_parameters
        sys.modules.pop(out.name, None)


def test_reduce_reports_each_stage_from_start_to_end(tmp_path):
    """The progress the CLI's bars show: every stage in the order it runs, each from 0 to its
    total; the chart's units and the tensors read are counted one by one."""
    from symcomp.hf.reduce import reduce_checkpoint

    calls: list[tuple[str, int, int]] = []
    folder = _saved("llama", tmp_path / "checkpoint")
    reduce_checkpoint(folder, tmp_path / "out", progress=lambda *c: calls.append(c))
    stages = list(dict.fromkeys(stage for stage, _, _ in calls))
    assert stages == ["read", "analyze", "standard", "chart", "reduced"]
    for stage in stages:
        seen = [(done, total) for s, done, total in calls if s == stage]
        assert seen[-1][0] == seen[-1][1] > 0, (stage, seen)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen), (stage, seen)
    read = [total for s, _, total in calls if s == "read"]
    assert read[-1] == len(_reload(folder).state_dict())
    assert len([c for c in calls if c[0] == "chart"]) > 2
