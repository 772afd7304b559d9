"""The weight files of a generated package: safetensors files tagged with their spec and sizes.

A file's metadata says what it holds (``format``: ``symcomp-standard`` or ``symcomp-reduced``),
for which spec (``spec``: its name) and at which sizes (``sizes``: JSON), so that a model is
rebuilt at the sizes it was saved at. Reading and writing need the safetensors package; it is
imported only then, so that the runtime itself needs only torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import Tensor, nn

from .modules import use_numerics

__all__ = ["Pretrained", "check_names", "read_weights", "write_weights"]


def _safetensors() -> Any:
    """The safetensors package, with its torch API: only the weight files need it."""
    try:
        import safetensors.torch
    except ImportError as exc:
        raise ImportError(
            "reading or writing weight files needs the safetensors package: pip install safetensors"
        ) from exc
    return safetensors


def read_weights(
    path: str | os.PathLike[str], default: str, kind: str, *, spec: str
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """The tensors of a symcomp safetensors file (``path`` or ``path/default``) of ``kind``
    weights of the spec named ``spec``, and the sizes of the instance they belong to."""
    safetensors = _safetensors()
    file = Path(path)
    file = file / default if file.is_dir() else file
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file (write it with save_pretrained)")
    try:
        with safetensors.torch.safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except safetensors.SafetensorError as exc:
        raise ValueError(f"{file}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != f"symcomp-{kind}" or meta.get("spec") != spec:
        raise ValueError(
            f"{file}: not the {kind} weights of {spec!r} "
            f"(format {meta.get('format')!r}, spec {meta.get('spec')!r})"
        )
    return tensors, json.loads(meta["sizes"])


def check_names(path: object, found: set[str], expected: set[str]) -> None:
    """ValueError unless the file at ``path`` holds exactly the tensors ``expected``."""
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing or extra:
        raise ValueError(f"{path}: missing tensors {missing}, unexpected tensors {extra}")


def write_weights(
    file: Path, tensors: dict[str, Tensor], kind: str, sizes: dict[str, int], *, spec: str
) -> Path:
    """``tensors`` as a safetensors file, written to a temporary file and renamed into place."""
    safetensors = _safetensors()
    meta = {"format": f"symcomp-{kind}", "spec": spec, "sizes": json.dumps(sizes)}
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    os.close(fd)
    try:
        contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
        safetensors.torch.save_file(contiguous, tmp, metadata=meta)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file


class Pretrained:
    """``from_pretrained`` and ``save_pretrained`` of a generated ``Model(Pretrained,
    nn.Module)``: its parameters in ``standard.safetensors``, tagged with ``SPEC_NAME`` and the
    model's ``sizes``."""

    SPEC_NAME: ClassVar[str]
    WEIGHTS: ClassVar[str] = "standard.safetensors"
    TINY: ClassVar[dict[str, int]] = {}  # small sizes of the same structure

    def use_numerics(self, numerics: str) -> Self:
        """This model, rounding as ``numerics`` says: ``"symcomp"`` (the model's dtype
        throughout) or ``"transformers"`` (transformers' float32 islands in RMSNorm and RoPE);
        see :data:`symcomp_runtime.modules.NUMERICS`."""
        return use_numerics(self, numerics)  # type: ignore[arg-type, return-value]

    @classmethod
    def tiny(cls, *, dtype: torch.dtype = torch.float64, seed: int = 0) -> Self:
        """A small instance of the same structure (the sizes ``TINY``) at a generic point: every
        parameter drawn at random, gains and biases included (a fresh model's zero biases make
        some of its symmetries degenerate). The same ``seed`` gives the same parameters; the
        caller's random state is left as it was."""
        if not cls.TINY:
            raise TypeError(f"{cls.__name__} has no TINY sizes: recompile its spec")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(dtype=dtype, **cls.TINY)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.5 * torch.randn_like(p))
        return model

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Self:
        """The model ``save_pretrained`` (or ``symcomp reduce``) wrote: ``path`` is the folder
        holding ``standard.safetensors``, or that file. ``dtype`` defaults to the stored one."""
        tensors, sizes = read_weights(path, cls.WEIGHTS, "standard", spec=cls.SPEC_NAME)
        stored = next(iter(tensors.values())).dtype
        model: Any = cls(dtype=dtype or stored, device=device, **sizes)  # type: ignore[call-arg]
        expected: dict[str, nn.Parameter] = dict(model.named_parameters())
        check_names(path, set(tensors), set(expected))
        with torch.no_grad():
            for name, p in expected.items():
                if tuple(tensors[name].shape) != tuple(p.shape):
                    raise ValueError(
                        f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                        f"the model expects {tuple(p.shape)}"
                    )
                p.copy_(tensors[name])
        return model

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write the parameters to ``path/standard.safetensors`` (atomically); returns the file."""
        model: Any = self
        tensors = {name: p.detach() for name, p in model.named_parameters()}
        sizes = vars(model.sizes)
        return write_weights(
            Path(path) / self.WEIGHTS, tensors, "standard", sizes, spec=self.SPEC_NAME
        )
