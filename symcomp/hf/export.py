"""``symcomp export PACKAGE --hf OUT``: a reduced package back to a Hugging Face checkpoint that
transformers loads with its own class and names (``from_pretrained``), computing the same
log-probabilities.

Passes (the reverse of :mod:`symcomp.hf.reduce`):

1. the package: its ``spec.yaml`` (which names the transformers family) and the original
   ``config.json``, which ``reduce`` keeps as ``hf_config.json`` (:func:`keep_hf_config`);
2. the weights: by default the package's ``reduced.safetensors``, rebuilt to the standard
   parameters (in float64 for a float64 file or output, else in float32): the chart point, a
   canonical representative of the orbit, so the exported tensors differ from the original
   checkpoint's by a symmetry, not in function. Or a ``standard.safetensors``, exported as it
   is or, with ``canonicalize``, brought to the chart first; any other file of either format
   (a model trained after ``reduce``) the same way;
3. the names: our parameters to transformers' tensors through the same name tables that import
   them (:func:`symcomp.hf.weights.iter_hf_tensors`: fused q/k/v and gate/up, transposes,
   GPT-2's ``Conv1D``, the fused experts), under the names the original checkpoint had (which
   ``reduce`` lists in ``hf_tensors.json``: where a table reads one tensor from alternative
   names, as Falcon's norms, they say which; a tied unembedding is left out where the
   checkpoint left it out). For a package without the list: the parameters of transformers'
   own model of the config (built on the meta device);
4. the files, written as the tensors are produced: ``model.safetensors``, or shards
   ``model-0000i-of-0000n.safetensors`` and ``model.safetensors.index.json`` past
   ``max_shard_size``; ``config.json`` is the original with its ``dtype`` set to the one
   written. Everything goes to a temporary folder beside ``OUT``, moved into place at the end.

Rows no input reads (OPT's two leading position rows, BERT's token-type rows past type 0) are
written as the weights hold them: the checkpoint's values from a standard file, zeros from the
reduced model (its chart fixes them at zero).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from symcomp.codegen.emit import OverwriteError
from symcomp.errors import SpecError
from symcomp.hf.checkpoint import INDEX_FILE, WEIGHTS_FILE, weight_files
from symcomp.hf.config_import import CONFIG_FILE, import_hf_config
from symcomp.spec.model import Spec

HF_CONFIG_FILE = "hf_config.json"
"""The original ``config.json`` in a reduced package (written by ``reduce``)."""
HF_TENSORS_FILE = "hf_tensors.json"
"""The names of the original checkpoint's tensors, in a reduced package (written by ``reduce``)."""
SPEC_FILE = "spec.yaml"
REDUCED_WEIGHTS, STANDARD_WEIGHTS = "reduced.safetensors", "standard.safetensors"
DEFAULT_SHARD_SIZE = "5GB"
DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

Progress = Callable[[int, int], None]  # (scalars written, scalars)


@dataclass(frozen=True)
class Exported:
    """What ``export`` wrote: the folder, its weight files and what they hold."""

    out: Path
    source: str  # "reduced", "standard" or "standard, canonicalized"
    files: tuple[str, ...]
    tensors: int
    parameters: int
    dtype: str


def keep_hf_config(checkpoint: str | Path, package: str | Path) -> None:
    """Copy the checkpoint's ``config.json`` into the package folder as ``hf_config.json``, and
    list its tensors' names in ``hf_tensors.json`` (read from the safetensors headers).
    ``reduce`` calls it while it writes the package; ``export`` writes the same names back."""
    from safetensors.torch import safe_open

    checkpoint, package = Path(checkpoint), Path(package)
    shutil.copyfile(checkpoint / CONFIG_FILE, package / HF_CONFIG_FILE)
    names: list[str] = []
    for file in weight_files(checkpoint):
        with safe_open(str(file), framework="pt") as f:
            names += f.keys()
    (package / HF_TENSORS_FILE).write_text(json.dumps({"tensors": names}, indent=1) + "\n")


def export_checkpoint(
    package: str | Path,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    config: str | Path | None = None,
    dtype: str | None = None,
    canonicalize: bool = False,
    max_shard_size: str | int = DEFAULT_SHARD_SIZE,
    force: bool = False,
    progress: Progress | None = None,
) -> Exported:
    """Write the weights of the reduced ``package`` as the Hugging Face checkpoint ``out``.

    ``weights``: a symcomp safetensors file (reduced or standard) or the name of one in the
    package (default: ``reduced.safetensors``, else ``standard.safetensors``). ``config``: the
    transformers ``config.json`` (default: the package's ``hf_config.json``). ``dtype``: one of
    :data:`DTYPES` (default: the weights' own). Bad input raises :class:`SpecError` naming the
    file; an ``out`` that holds files raises an ``OverwriteError`` unless ``force``.
    """
    folder, out = Path(package), Path(out)
    spec = _package_spec(folder)
    hf_config = _hf_config(folder, config, spec)
    file = _weights_file(folder, weights)
    _check_target(out, folder, force)
    shard_bytes = _shard_bytes(max_shard_size)
    kind = _weights_format(file)
    stored = _stored_dtype(file)
    target = _dtype(dtype, stored)
    # rebuilt in the wider of the two types, at least float32 (float64 for a float64 file)
    compute = torch.promote_types(torch.promote_types(stored, target), torch.float32)
    params, kind = _standard_parameters(folder, file, kind, compute, canonicalize)
    assert spec.hf_model_type is not None
    from symcomp.hf.weights import iter_hf_tensors

    names = _tensor_names(folder, config)
    tensors = iter_hf_tensors(spec, params, spec.hf_model_type, tied_unembedding=False, names=names)
    hf_config = {**hf_config, **_dtype_fields(hf_config, target)}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        expected = sum(t.numel() for t in params.values())  # for the progress only
        tensors = _cast(tensors, target)
        files, count, numel = _write_shards(tmp, tensors, shard_bytes, expected, progress)
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        _permissions_as_created(tmp)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(out, kind, tuple(files), count, numel, _dtype_name(target))


# --- the inputs --------------------------------------------------------------------------------


def _package_spec(folder: Path) -> Spec:
    from symcomp.spec import load_spec

    accepted = "a folder written by `symcomp reduce --hf` (spec.yaml, reduced.safetensors)"
    if not folder.is_dir():
        raise SpecError.at("not a folder", file=str(folder), accepted=accepted)
    if not (folder / SPEC_FILE).is_file() or not (folder / "__init__.py").is_file():
        raise SpecError.at(
            f"not a reduced package (no {SPEC_FILE} or __init__.py)",
            file=str(folder),
            accepted=accepted,
        )
    spec = load_spec(folder / SPEC_FILE)
    if spec.hf_model_type is None:
        raise SpecError.at(
            "the package's spec names no transformers family",
            file=str(folder / SPEC_FILE),
            key_path=("hf_model_type",),
            accepted="a package that `symcomp reduce --hf` wrote from a checkpoint",
        )
    return spec


def _hf_config(folder: Path, config: str | Path | None, spec: Spec) -> dict:
    """The transformers config (parsed); it must describe the package's model."""
    file = Path(config) if config is not None else folder / HF_CONFIG_FILE
    if file.is_dir():
        file = file / CONFIG_FILE
    if not file.is_file():
        raise SpecError.at(
            f"no {file.name}: the transformers config of the model is needed",
            file=str(file),
            accepted=f"a package reduced by this symcomp (it keeps {HF_CONFIG_FILE}), or "
            "--config pointing at the original config.json",
        )
    try:
        data = json.loads(file.read_text())
    except ValueError as exc:
        raise SpecError.at(f"not JSON ({exc})", file=str(file)) from None
    imported = import_hf_config(file)
    if imported.architecture != spec.architecture:
        raise SpecError.at(
            "this config describes another model than the package's spec.yaml",
            file=str(file),
            accepted=f"the config.json that {folder / SPEC_FILE} was imported from",
        )
    return data


def _tensor_names(folder: Path, config: str | Path | None) -> list[str] | None:
    """The names to write: the original checkpoint's (kept by ``reduce``), else the parameters
    of transformers' model of the config (a tied tensor once), else None (every name the
    name table fills, a tied unembedding left out; a table with alternative names for one
    tensor, as Falcon's norms, then writes both)."""
    kept = folder / HF_TENSORS_FILE
    if kept.is_file():
        try:
            return list(json.loads(kept.read_text())["tensors"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SpecError.at(f"not a list of tensor names ({exc})", file=str(kept)) from None
    try:
        import transformers
    except ImportError:
        return None
    file = Path(config) if config is not None else folder / HF_CONFIG_FILE
    cfg = transformers.AutoConfig.from_pretrained(
        str(file / CONFIG_FILE if file.is_dir() else file)
    )
    from transformers.models.auto import modeling_auto

    masked = cfg.model_type in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    auto = (
        transformers.AutoModelForMaskedLM
        if masked and not getattr(cfg, "is_decoder", False)
        else transformers.AutoModelForCausalLM
    )
    with torch.device("meta"):
        model = auto.from_config(cfg)
    return [name for name, _ in model.named_parameters()]  # a tied copy once, as saved


def _weights_file(folder: Path, weights: str | Path | None) -> Path:
    if weights is None:
        for name in (REDUCED_WEIGHTS, STANDARD_WEIGHTS):
            if (folder / name).is_file():
                return folder / name
        raise SpecError.at(
            f"no {REDUCED_WEIGHTS} or {STANDARD_WEIGHTS} in the package",
            file=str(folder),
            accepted="a folder written by `symcomp reduce --hf`, or --weights FILE",
        )
    file = Path(weights)
    if not file.is_absolute() and not file.exists() and (folder / file).is_file():
        file = folder / file
    if not file.is_file():
        raise SpecError.at("no such weights file", file=str(file))
    return file


def _weights_format(file: Path) -> str:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise SpecError.at(f"not a readable safetensors file ({exc})", file=str(file)) from None
    kind = meta.get("format", "")
    if kind not in ("symcomp-reduced", "symcomp-standard"):
        raise SpecError.at(
            "not symcomp weights",
            file=str(file),
            found=f"format {kind!r}",
            accepted="reduced.safetensors or standard.safetensors (save_pretrained of the "
            "package's ReducedModel or Model)",
        )
    return kind.removeprefix("symcomp-")


def _standard_parameters(
    folder: Path, file: Path, kind: str, dtype: torch.dtype, canonicalize: bool
) -> tuple[dict[str, Tensor], str]:
    """The standard parameters (in ``dtype``) that the ``kind`` weights in ``file`` stand for,
    and what they are."""
    from symcomp.codegen.load import loaded_package

    with loaded_package(folder) as pkg:
        try:
            if kind == "reduced":
                model = pkg.ReducedModel.from_pretrained(file, dtype=dtype)
            else:
                model = pkg.Model.from_pretrained(file, dtype=dtype)
                if canonicalize:
                    model, kind = pkg.ReducedModel.from_standard(model), "standard, canonicalized"
        except (ValueError, FileNotFoundError) as exc:
            raise SpecError.at(f"cannot load the weights: {exc}", file=str(file)) from None
        with torch.no_grad():
            if hasattr(model, "standard_parameters"):
                params = {k: v.detach() for k, v in model.standard_parameters().items()}
            else:
                params = {k: v.detach() for k, v in model.named_parameters()}
    return params, kind


def _stored_dtype(file: Path) -> torch.dtype:
    """The dtype of the parameters in a symcomp weights file (not of the chart's choices)."""
    from safetensors.torch import safe_open

    with safe_open(str(file), framework="pt") as f:
        name = next(k for k in f.keys() if not k.startswith("choice."))  # noqa: SIM118
        return f.get_tensor(name).dtype


def _dtype(name: str | None, stored: torch.dtype) -> torch.dtype:
    if name is None:
        return stored
    if name not in DTYPES:
        raise SpecError.at(
            "unknown dtype", file="<command line>", found=repr(name), accepted=", ".join(DTYPES)
        )
    return DTYPES[name]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_fields(config: dict, dtype: torch.dtype) -> dict[str, str]:
    """The config's dtype entries (``dtype``; ``torch_dtype`` in older configs) set to ``dtype``."""
    keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype"]
    return {k: _dtype_name(dtype) for k in keys}


def _shard_bytes(size: str | int) -> int:
    """Bytes from ``5GB``, ``500MB``, ``2GiB`` or an int (decimal units, as transformers)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, re.IGNORECASE)
    if m is None or float(m.group(1)) <= 0:
        raise SpecError.at(
            "not a size", file="<command line>", found=repr(size), accepted="e.g. 5GB, 500MB"
        )
    unit = (m.group(2) or "B").upper()
    base = 1024 if "I" in unit else 1000
    power = "BKMGT".index(unit[0])
    return int(float(m.group(1)) * base**power)


def _check_target(out: Path, package: Path, force: bool) -> None:
    """``out`` must be absent or empty (or ``force``), and never the package or hold it."""
    if out.resolve() == package.resolve() or out.resolve() in package.resolve().parents:
        raise OverwriteError(f"{out} would replace the package {package}", hint=None)
    if not force and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OverwriteError(f"{out} exists and is not empty")


# --- the files -----------------------------------------------------------------------------------


def _cast(tensors: Iterator[tuple[str, Tensor]], dtype: torch.dtype):
    """Each tensor in ``dtype``, owning its memory: safetensors refuses tensors that share it
    (a tied copy, a view into a larger rebuilt tensor)."""
    seen: set[int] = set()
    for name, tensor in tensors:
        t = tensor.to(dtype).contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        yield name, t


def _write_shards(
    folder: Path,
    tensors: Iterator[tuple[str, Tensor]],
    max_bytes: int,
    expected: int,
    progress: Progress | None,
) -> tuple[list[str], int, int]:
    """Write ``tensors`` as shards of at most ``max_bytes`` (a larger tensor gets its own),
    each as soon as it is full; one shard is ``model.safetensors``, several are indexed."""
    from safetensors.torch import save_file

    written: list[tuple[str, list[str]]] = []
    shard: dict[str, Tensor] = {}
    size = total = count = numel = 0

    def flush() -> None:
        name = f".shard-{len(written):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        written.append((name, list(shard)))
        shard.clear()

    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if shard and size + nbytes > max_bytes:
            flush()
            size = 0
        shard[name] = tensor
        size, total, count, numel = size + nbytes, total + nbytes, count + 1, numel + tensor.numel()
        if progress is not None:
            progress(numel, max(numel, expected))
    if shard or not written:
        flush()
    if len(written) == 1:
        os.replace(folder / written[0][0], folder / WEIGHTS_FILE)
        return [WEIGHTS_FILE], count, numel
    n = len(written)
    weight_map: dict[str, str] = {}
    files = []
    for i, (tmp_name, names) in enumerate(written, start=1):
        final = f"model-{i:05d}-of-{n:05d}.safetensors"
        os.replace(folder / tmp_name, folder / final)
        weight_map |= dict.fromkeys(names, final)
        files.append(final)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [*files, INDEX_FILE], count, numel


def _permissions_as_created(folder: Path) -> None:
    """The modes a plain mkdir and open would give (mkdtemp and safetensors make them private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.iterdir():
        file.chmod(0o666 & ~umask)


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        old.rmdir()
        out.rename(old)
        tmp.rename(out)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        tmp.rename(out)


__all__ = [
    "DTYPES",
    "HF_CONFIG_FILE",
    "HF_TENSORS_FILE",
    "Exported",
    "export_checkpoint",
    "keep_hf_config",
]
