"""``symcomp export PACKAGE --hf OUT``: a reduced package back to a transformers checkpoint.

A tiny random checkpoint of a family is reduced, exported, and loaded by transformers'
own ``from_pretrained`` (no missing or unexpected tensors). Its log-probs must equal the reduced
model's (within 1e-10 with transformers' float32 islands lifted to float64 as
:data:`hf_families.PATCHES` do; within the stock tolerance as shipped), and the standard weights
exported as they are must give back the original checkpoint's tensors bit for bit.

The fast tests build the package as ``reduce`` does but without its measured analysis (the
count is test_hf_families' business), for three families that cover the layouts: GPT-2
(``Conv1D``, fused ``c_attn`` columns, tied), Phi-3 (fused ``qkv_proj`` rows and ``gate_up_proj``,
grouped-query attention) and Mixtral (fused experts, the router). The full matrix, through the
real ``symcomp reduce --hf`` and ``symcomp export``, runs under ``-m slow``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from symcomp.codegen.emit import write_package
from symcomp.codegen.load import loaded_package
from symcomp.hf.checkpoint import INDEX_FILE, read_checkpoint
from symcomp.hf.export import HF_CONFIG_FILE, HF_TENSORS_FILE, export_checkpoint, keep_hf_config
from symcomp.hf.weights import from_hf_state_dict
from symcomp.pipeline import compile_package
from symcomp.spec.writer import dump_spec

try:
    import hf_families
    import hf_tiny
except ImportError:  # tests/ became a package
    from tests import hf_families, hf_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL = sorted({*hf_tiny.FAMILIES, *hf_families.CONFIGS})
FAST = ("gpt2", "phi3", "mixtral")


def _save_checkpoint(name: str, folder: Path) -> None:
    """A random float64 checkpoint of ``name`` (a tiny family of hf_tiny or hf_families)."""
    if name in hf_tiny.FAMILIES:
        model = hf_tiny.build(name, float64_norms=False)
    else:
        model = hf_families.build(hf_families.CONFIGS[name]())
    model.save_pretrained(folder)


def _package(checkpoint: Path, out: Path) -> None:
    """What ``reduce --hf`` writes (spec.yaml, hf_config.json, both weight files), without the
    measured analysis."""
    ckpt = read_checkpoint(checkpoint)
    assert ckpt.spec.hf_model_type is not None
    params = from_hf_state_dict(ckpt.spec, ckpt.state_dict, ckpt.spec.hf_model_type)
    text = dump_spec(ckpt.spec)

    def weights(folder: Path) -> None:
        (folder / "spec.yaml").write_text(text)
        keep_hf_config(checkpoint, folder)
        with loaded_package(folder) as pkg:
            model = pkg.Model(dtype=torch.float64)
            with torch.no_grad():
                for key, p in model.named_parameters():
                    p.copy_(params[key])
            model.save_pretrained(folder)
            pkg.ReducedModel.from_standard(model).save_pretrained(folder)

    write_package(compile_package(ckpt.spec, text), out, extra=weights)


def _load(folder: Path, *, patched: bool) -> torch.nn.Module:
    """The checkpoint as transformers loads it, every tensor found in the file."""
    cfg = transformers.AutoConfig.from_pretrained(folder)
    auto, attn = hf_families._auto(cfg)
    kw = {**hf_families.IMPLEMENTATIONS, "attn_implementation": hf_families.ATTENTION.get(
        cfg.model_type, attn)}  # fmt: skip
    model, info = auto.from_pretrained(folder, output_loading_info=True, **kw)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    model = model.to(torch.float64).eval()
    return hf_families.patch_float64_(model) if patched else model


def _log_probs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids).logits, dim=-1)


def check_export(name: str, package: Path, checkpoint: Path, tmp: Path, export) -> None:
    """The exported reduced model computes the reduced model's log-probs; the exported standard
    weights are the checkpoint's, tensor for tensor."""
    default = torch.get_default_dtype()
    if name in hf_families.DEFAULT_FLOAT64:
        torch.set_default_dtype(torch.float64)
    try:
        out = tmp / "exported"
        export(package, out)
        vocab = json.loads((checkpoint / "config.json").read_text())["vocab_size"]
        ids = torch.randint(0, vocab, (3, hf_tiny.T), generator=torch.Generator().manual_seed(4))
        with loaded_package(package) as pkg:
            reduced = pkg.ReducedModel.from_pretrained(package, dtype=torch.float64)
            with torch.no_grad():
                expected = reduced.log_probs(ids)
        got = _log_probs(_load(out, patched=True), ids)
        assert float((got - expected).abs().max()) <= hf_families.TOL
        stock = _log_probs(_load(out, patched=False), ids)
        tol = hf_families.STOCK_TOLERANCE.get(name, hf_families.STOCK_TOL)
        assert float((stock - expected).abs().max()) <= tol * max(1.0, float(stock.abs().max()))
        original = _log_probs(_load(checkpoint, patched=True), ids)
        assert float((original - expected).abs().max()) <= hf_families.TOL

        export(package, tmp / "standard", "--weights", str(package / "standard.safetensors"))
        back = _load(tmp / "standard", patched=False).state_dict()
        first = _load(checkpoint, patched=False).state_dict()
        assert back.keys() == first.keys()
        assert all(torch.equal(back[key], first[key]) for key in first)
    finally:
        torch.set_default_dtype(default)


def _api(package: Path, out: Path, *argv: str) -> None:
    weights = argv[1] if argv else None
    export_checkpoint(package, out, weights=weights)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """name -> (package, checkpoint), built once per family for this module."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in made:
            root = tmp_path_factory.mktemp(name)
            _save_checkpoint(name, root / "checkpoint")
            _package(root / "checkpoint", root / f"pkg_{name}")
            made[name] = (root / f"pkg_{name}", root / "checkpoint")
        return made[name]

    return get


@pytest.mark.parametrize("name", FAST)
def test_export_is_loaded_by_transformers_with_the_same_log_probs(name, packages, tmp_path):
    package, checkpoint = packages(name)
    check_export(name, package, checkpoint, tmp_path, _api)


def test_a_large_model_is_sharded_and_read_back(packages, tmp_path, run_cli):
    package, checkpoint = packages("gpt2")
    out = tmp_path / "sharded"
    code, _, stderr = run_cli("export", str(package), "--hf", str(out), "--max-shard-size", "2KB")
    assert code == 0, stderr
    index = json.loads((out / INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((out / s).is_file() for s in shards)
    assert not (out / "model.safetensors").exists()
    ids = torch.randint(0, 11, (2, hf_tiny.T), generator=torch.Generator().manual_seed(1))
    expected = _log_probs(_load(checkpoint, patched=True), ids)
    assert float((_log_probs(_load(out, patched=True), ids) - expected).abs().max()) <= 1e-10
    assert read_checkpoint(out).spec.architecture == read_checkpoint(checkpoint).spec.architecture


def test_dtype_and_config(packages, tmp_path, run_cli):
    package, checkpoint = packages("gpt2")
    out = tmp_path / "fp32"
    code, _, stderr = run_cli("export", str(package), "--hf", str(out), "--dtype", "float32")
    assert code == 0, stderr
    written = json.loads((out / "config.json").read_text())
    original = json.loads((checkpoint / "config.json").read_text())
    assert written == {**original, "dtype": "float32"}
    model = _load(out, patched=False)
    assert {p.dtype for p in model.parameters()} == {torch.float64}  # _load casts
    raw = read_checkpoint(out).state_dict
    assert {t.dtype for t in raw.values()} == {torch.float32}


def test_bad_input_is_a_clear_error(packages, tmp_path, run_cli):
    package, checkpoint = packages("gpt2")
    cases = {
        "not a folder": (str(tmp_path / "missing"), "--hf", str(tmp_path / "a")),
        "not a reduced package": (str(checkpoint), "--hf", str(tmp_path / "b")),
        "no such weights file": (str(package), "--hf", str(tmp_path / "c"), "--weights", "x"),
        "not symcomp weights": (
            str(package), "--hf", str(tmp_path / "d"), "--weights",
            str(checkpoint / "model.safetensors"),
        ),
        "exists and is not empty": (str(package), "--hf", str(checkpoint)),
        "not a size": (str(package), "--hf", str(tmp_path / "e"), "--max-shard-size", "big"),
        "would replace the package": (str(package), "--hf", str(package.parent), "--force"),
    }  # fmt: skip
    for message, argv in cases.items():
        code, _, stderr = run_cli("export", *argv)
        assert code == 2 and message in stderr and "Traceback" not in stderr, (message, stderr)
        assert not (tmp_path / "a").exists()
    # a package without the original config: named, and --config supplies it (the names
    # then come from transformers' model of the config)
    bare = tmp_path / "bare"
    shutil.copytree(package, bare)
    (bare / HF_CONFIG_FILE).unlink()
    (bare / HF_TENSORS_FILE).unlink()
    code, _, stderr = run_cli("export", str(bare), "--hf", str(tmp_path / "f"))
    assert code == 2 and "--config" in stderr, stderr
    config = str(checkpoint / "config.json")
    code, _, stderr = run_cli("export", str(bare), "--hf", str(tmp_path / "f"), "--config", config)
    assert code == 0, stderr
    ids = torch.randint(0, 11, (2, hf_tiny.T), generator=torch.Generator().manual_seed(1))
    expected = _log_probs(_load(checkpoint, patched=True), ids)
    assert (
        float((_log_probs(_load(tmp_path / "f", patched=True), ids) - expected).abs().max()) < 1e-10
    )
    # another model's config is refused
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((checkpoint / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "n_embd": 16}))
    code, _, stderr = run_cli("export", str(bare), "--hf", str(tmp_path / "g"), "--config",
                              str(other))  # fmt: skip
    assert code == 2 and "another model" in stderr, stderr
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no leftovers


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_family_reduces_and_exports(name, run_cli, tmp_path):
    """The full matrix through the command line: reduce --hf, then export."""
    checkpoint, package = tmp_path / "checkpoint", tmp_path / f"pkg_{name}"
    _save_checkpoint(name, checkpoint)
    code, stdout, stderr = run_cli("reduce", "--hf", str(checkpoint), "-o", str(package))
    assert code == 0, stderr + stdout

    def export(package: Path, out: Path, *argv: str) -> None:
        code, stdout, stderr = run_cli("export", str(package), "--hf", str(out), *argv)
        assert code == 0, stderr + stdout

    check_export(name, package, checkpoint, tmp_path, export)


def test_canonicalized_standard_weights_are_the_reduced_models(packages, tmp_path, run_cli):
    """--canonicalize brings standard weights to the chart: the reduced model's tensors."""
    package, _ = packages("gpt2")
    standard = str(package / "standard.safetensors")
    for out, argv in (("a", ()), ("b", ("--weights", standard, "--canonicalize"))):
        code, _, stderr = run_cli("export", str(package), "--hf", str(tmp_path / out), *argv)
        assert code == 0, stderr
    reduced, canonical = (read_checkpoint(tmp_path / out).state_dict for out in "ab")
    assert reduced.keys() == canonical.keys()
    assert max(float((reduced[k] - canonical[k]).abs().max()) for k in reduced) < 1e-12
    original = read_checkpoint(package.parent / "checkpoint").state_dict
    assert any(not torch.equal(original[k], reduced[k]) for k in reduced)  # moved by a symmetry


def test_without_the_checkpoints_names_transformers_own_are_written(packages, tmp_path):
    """save_pretrained writes Mixtral's experts one by one (w1, w2, w3); a package without the
    list of names gets the names of transformers' model instead: the fused experts."""
    package, checkpoint = packages("mixtral")
    bare = tmp_path / "bare"
    shutil.copytree(package, bare)
    (bare / HF_TENSORS_FILE).unlink()
    export_checkpoint(bare, tmp_path / "out")
    names = set(read_checkpoint(tmp_path / "out").state_dict)
    assert "model.layers.0.mlp.experts.gate_up_proj" in names
    assert not any("block_sparse_moe" in n for n in names)
    assert any("block_sparse_moe" in n for n in read_checkpoint(checkpoint).state_dict)
    ids = torch.randint(
        0, hf_families.V, (2, hf_tiny.T), generator=torch.Generator().manual_seed(1)
    )
    expected = _log_probs(_load(checkpoint, patched=True), ids)
    got = _log_probs(_load(tmp_path / "out", patched=True), ids)
    assert float((got - expected).abs().max()) <= hf_families.TOL
