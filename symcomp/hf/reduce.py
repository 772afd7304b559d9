"""``symcomp reduce --hf DIR -o OUT``: a Hugging Face checkpoint to a compiled package with its
standard and reduced weights; and ``from_transformers(model)``, the same from a live model.

Passes: read the checkpoint (config and safetensors, no transformers), compile the spec into a
package, convert the weights through the family's name table, then, in the package's temporary
folder, load the generated ``Model``, save it (``standard.safetensors``), bring it to the chart
(``ReducedModel.from_standard``) and save that (``reduced.safetensors``). The folder is moved
into place only when all of it worked, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import torch
from torch import Tensor

from symcomp import __version__
from symcomp.codegen.emit import check_target, write_package
from symcomp.codegen.load import loaded_package
from symcomp.errors import CheckpointError, NoReducedModelError
from symcomp.hf.checkpoint import read_checkpoint
from symcomp.hf.export import keep_hf_config
from symcomp.hf.weights import from_hf_state_dict
from symcomp.pipeline import analyze_and_compile, compile_package
from symcomp.spec.model import Spec
from symcomp.spec.writer import dump_spec
from symcomp.symmetry.analysis import Analysis

SPEC_FILE = "spec.yaml"

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class ReduceError(CheckpointError):
    """The checkpoint cannot be reduced (no chart for its groups, a count that disagrees)."""


@dataclass(frozen=True)
class Reduced:
    """What ``reduce`` did: the analysis (counts per group) and the files written."""

    analysis: Analysis
    stored_parameters: int
    reduced_parameters: int
    out: Path


DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def reduce_checkpoint(
    folder: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
    dtype: torch.dtype | None = None,
) -> Reduced:
    """Reduce the checkpoint in ``folder`` into the package ``out`` (see the module doc). The
    weights are written in ``dtype``, by default the checkpoint's; the chart is computed in
    float64 whatever it is. The checkpoint is read memory-mapped, a tensor at a time."""
    out = Path(out)
    if not force:
        check_target(out)  # before the work, and again when writing
    ckpt = read_checkpoint(folder, progress=_stage(progress, "read"), lazy=True)
    assert ckpt.spec.hf_model_type is not None  # import_hf_config always sets it
    stored = getattr(ckpt.state_dict, "dtype", None) or torch.float32
    params = from_hf_state_dict(ckpt.spec, ckpt.state_dict, ckpt.spec.hf_model_type)
    spec = ckpt.spec
    del ckpt  # the memory maps
    header = f"Imported by symcomp reduce from {Path(folder).name}/config.json."
    text = dump_spec(spec, header=header)
    keep = partial(keep_hf_config, folder)  # for `symcomp export` (symcomp.hf.export)
    return _reduce(spec, text, params, out, force, progress, dtype or stored, keep=keep)


def _reduce(
    spec: Spec,
    spec_text: str,
    params: Mapping[str, Tensor],
    out: Path,
    force: bool,
    progress: Progress | None,
    dtype: torch.dtype | None = None,
    keep: Callable[[Path], None] | None = None,
) -> Reduced:
    step = _steps(progress)
    with step("analyze"):
        analysis, package = analyze_and_compile(spec, spec_text)
    if package.chart_problem:
        raise NoReducedModelError(
            f"{spec.name}: no reduced model: {package.chart_problem}; nothing written"
        )
    counts: dict[str, int] = {}

    def weights(folder: Path) -> None:
        (folder / SPEC_FILE).write_text(spec_text)
        if keep is not None:
            keep(folder)
        with loaded_package(folder) as pkg:
            with step("standard"):
                model = _standard(pkg, params, dtype)
                model.save_pretrained(folder)
            counts["stored"] = sum(p.numel() for p in model.parameters())
            chart = _stage(progress, "chart")
            tensors = {name: p.detach() for name, p in model.named_parameters()}
            sizes, out_dtype = dict(vars(model.sizes)), next(iter(tensors.values())).dtype
            del model  # the chart reads ``tensors`` and empties it: one copy at a time
            reduced = pkg.ReducedModel.from_parameters(
                tensors, sizes, progress=chart, dtype=out_dtype, consume=True
            )
            with step("reduced"):
                reduced.save_pretrained(folder)
            counts["reduced"] = sum(p.numel() for p in reduced.parameters())
        if counts["reduced"] != analysis.reduced_parameters:
            raise ReduceError(
                f"{spec.name}: the reduced model holds {counts['reduced']} parameters, the "
                f"analysis says {analysis.reduced_parameters}"
            )

    write_package(package, out, force=force, extra=weights)
    return Reduced(analysis, counts["stored"], counts["reduced"], out)


def _standard(pkg: ModuleType, params: Mapping[str, Tensor], dtype=None):
    """The package's ``Model`` holding ``params`` (in ``dtype``, by default theirs). A dict is
    emptied as its tensors are copied in, so that the two copies are never both whole."""
    dtype = dtype or next(iter(params.values())).dtype
    model = pkg.Model(dtype=dtype, device="meta")
    with torch.no_grad():
        for name, _ in list(model.named_parameters()):
            value = params.pop(name) if isinstance(params, dict) else params[name]
            module, _, leaf = name.rpartition(".")
            owner = model.get_submodule(module) if module else model
            setattr(owner, leaf, torch.nn.Parameter(value.to(dtype).contiguous()))
    return model


def _steps(progress: Progress | None):
    """A context manager per one-step stage: ``progress(stage, 0, 1)`` on entry, ``1, 1`` on
    leaving (the bar shows the stage running, then done)."""

    @contextmanager
    def step(stage: str) -> Iterator[None]:
        if progress is not None:
            progress(stage, 0, 1)
        yield
        if progress is not None:
            progress(stage, 1, 1)

    return step


def _stage(progress: Progress | None, stage: str):
    if progress is None:
        return None
    return lambda done, total, *_: progress(stage, done, total)


# --- a live transformers model ----------------------------------------------------------------


class Transformed(NamedTuple):
    """What :func:`from_transformers` returns: ``model, reduced, package = ...``."""

    model: Any  # the generated standard Model, holding the transformers model's weights
    reduced: Any  # its ReducedModel: the same log-probs from the non-redundant parameters only
    package: ModuleType  # the generated package (groups, invariants, projections, geometry)


def from_transformers(
    hf_model: Any, out: str | Path | None = None, *, force: bool = False
) -> Transformed:
    """The generated standard ``Model`` of a transformers model, holding its weights, and its
    reduced form.

    The package is compiled from the model's config into ``out`` (by default a cache folder
    named after the config, reused when it exists) and imported from there. The model and the
    reduced model are in the transformers model's dtype; both reproduce its log-probs (exactly
    in float64, where transformers' float32 islands are lifted: see the README).
    """
    from symcomp.hf.config_import import default_name, import_hf_config

    config = hf_model.config
    with tempfile.TemporaryDirectory() as tmp:
        config.to_json_file(str(Path(tmp) / "config.json"))
        text = (Path(tmp) / "config.json").read_text()
        source = getattr(config, "name_or_path", "") or config.model_type
        spec = import_hf_config(tmp, name=default_name(Path(source) / "config.json"))
    spec_text = dump_spec(spec, header="Imported by symcomp.hf.from_transformers.")
    digest = hashlib.sha256(f"{__version__}\n{text}".encode()).hexdigest()[:12]
    folder = Path(out) if out is not None else _cache() / f"{spec.name}_{digest}"
    assert spec.hf_model_type is not None
    params = from_hf_state_dict(spec, hf_model.state_dict(), spec.hf_model_type)
    if out is not None or not (folder / "__init__.py").is_file():
        write_package(compile_package(spec, spec_text), folder, force=force)
    module = _import_persistent(folder)
    model = _standard(module, params)
    return Transformed(model, module.ReducedModel.from_standard(model), module)


def _cache() -> Path:
    import os

    root = os.environ.get("SYMCOMP_CACHE") or Path.home() / ".cache" / "symcomp"
    return Path(root) / "packages"


def _import_persistent(folder: Path) -> ModuleType:
    """Import a package folder under a name unique to it (kept, since the model refers to it)."""
    name = "_symcomp_" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    return loaded_package(folder, name).__enter__()


__all__ = ["ReduceError", "Reduced", "Transformed", "from_transformers", "reduce_checkpoint"]
