"""The symmetry-reduced model: exactly the parameters that change the function.

``ReducedModel.from_standard(model)`` brings a model to its chart point (a function of the orbit:
any group-transformed copy gives the same reduced parameters) and keeps the entries the chart
leaves free. The fixed entries (identity blocks, zeros, ones) and the solved constraints are
rebuilt from those in ``to_standard()`` and in every forward. Buffers hold only the discrete
choices made (pivot rows, signs, dependent entries).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from .actions import as_sizes
from .decoding import Cache, greedy
from .gauge import Chart, canonicalize, determined, fixed_entries
from .modules import use_numerics
from .slices import reconstruct, translation_slices

__all__ = ["ReducedModel"]


def _key(name: str) -> str:
    return name.replace(".", "__")


def _buffer(key: str) -> str:
    """The buffer holding the discrete choice ``key`` (``"<step>.<layer>.<unit>[.signs]"``)."""
    return "choice_" + key.replace(".", "_").replace("-", "m")


class ReducedModel(nn.Module):
    """The model in the gauge-fixed chart: ``free.<name>`` holds the free entries of each
    standard parameter (flattened, in storage order).

    A generated package subclasses it and names its standard model, its chart and its weight
    files' readers and writers (class attributes)."""

    @classmethod
    def tiny(cls, *, dtype: torch.dtype = torch.float64, seed: int = 0) -> ReducedModel:
        """The reduced form of ``standard.tiny()``: a small instance of the same structure."""
        return cls.from_standard(cls.standard.tiny(dtype=dtype, seed=seed))

    standard: ClassVar[type[nn.Module]]
    chart: ClassVar[Chart]
    read_weights: ClassVar[Callable[..., tuple[dict[str, Tensor], dict[str, int]]]]
    write_weights: ClassVar[Callable[..., Path]]
    check_names: ClassVar[Callable[..., None]]

    def __init__(self, *, dtype=torch.float32, device=None, _record=None, **sizes):
        super().__init__()
        shell = self.standard(dtype=dtype, device="meta", **sizes)
        self.sizes = as_sizes(shell.sizes)
        shapes = {name: tuple(p.shape) for name, p in shell.named_parameters()}
        self._shapes = shapes
        object.__setattr__(self, "_shell", shell)  # not a submodule: it holds no values
        record = _record if _record is not None else self._default_record(shapes, self.sizes)
        for key, value in record.items():
            self.register_buffer(_buffer(key), value)
        self._record_keys = tuple(record)
        _, masks = self._layout()
        self.free = nn.ParameterDict(
            {
                _key(name): nn.Parameter(
                    torch.zeros(int((~mask).sum()), dtype=dtype, device=device)
                )
                for name, mask in masks.items()
            }
        )

    # --- the chart ---------------------------------------------------------------------------

    @property
    def record(self) -> dict[str, Tensor]:
        return {key: getattr(self, _buffer(key)) for key in self._record_keys}

    def _layout(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The discrete choices and the masks of determined entries (cached: they change only
        when the choices do, in ``from_standard`` or ``load_state_dict``, which replace or
        write to the buffers: their storage and version counter say so)."""
        stamp = tuple((value.data_ptr(), value._version) for value in self.record.values())
        if getattr(self, "_cached", (None,))[0] != stamp:
            record = {key: value.cpu() for key, value in self.record.items()}
            masks = determined(self.chart, record, self._shapes, self.sizes)
            object.__setattr__(self, "_cached", (stamp, record, masks))
        return self._cached[1], self._cached[2]

    def standard_parameters(self) -> dict[str, Tensor]:
        """The standard parameters this point stands for (differentiable in ``free``)."""
        free = {name: self.free[_key(name)] for name in self._shapes}
        record, masks, fixed, slices = self._plan(free[next(iter(self._shapes))])
        return reconstruct(self.chart, free, record, masks, self.sizes, slices, fixed)

    def _plan(self, like: Tensor):
        """The choices, and the masks, the fixed entries and the translation slices in
        ``like``'s dtype and device: what every forward needs that only the choices determine
        (cached with them)."""
        record, masks = self._layout()
        key = (self._cached[0], like.dtype, like.device)
        if getattr(self, "_planned", (None,))[0] != key:
            shapes, S = self._shapes, self.sizes
            plan = (
                record,
                {name: mask.to(like.device) for name, mask in masks.items()},
                fixed_entries(self.chart, record, masks, S, like.dtype, like.device),
                translation_slices(self.chart, record, shapes, S, like.dtype, like.device),
            )
            object.__setattr__(self, "_planned", (key, plan))
        return self._planned[1]

    @classmethod
    def from_standard(
        cls,
        model: nn.Module,
        progress: Callable[[int, int, str], None] | None = None,
        dtype: torch.dtype | None = None,
    ) -> ReducedModel:
        """The reduced parameters of ``model``'s orbit (computed in float64), in ``dtype`` (by
        default the model's). ``progress`` is called as the chart's steps go, with (units
        done, units, group): each step fixes its group on every unit (layer, head, neuron)."""
        p = next(model.parameters())
        params = {name: value.detach().cpu() for name, value in model.named_parameters()}
        return cls.from_parameters(
            params, as_sizes(model.sizes), progress, dtype or p.dtype, p.device
        )

    @classmethod
    def from_parameters(
        cls,
        params: dict[str, Tensor],
        sizes: dict[str, int],
        progress: Callable[[int, int, str], None] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        consume: bool = False,
    ) -> ReducedModel:
        """:meth:`from_standard` from the standard parameters by name; with ``consume``,
        ``params`` is emptied as they are read (at real sizes, the caller then holds no second
        copy of the model while the chart is computed)."""
        S = sizes
        canonical, record = canonicalize(cls.chart, params, S, progress=progress, consume=consume)
        p = torch.zeros((), dtype=dtype, device=device)
        out = cls(dtype=p.dtype, device=p.device, _record=record, **S)
        _, masks = out._layout()
        with torch.no_grad():
            for name, mask in masks.items():
                out.free[_key(name)].copy_(canonical.pop(name)[~mask].to(p))
        return out

    def to_standard(self) -> nn.Module:
        """A standard ``Model`` at this chart point."""
        p = next(self.parameters())
        model = self.standard(dtype=p.dtype, device=p.device, **self.sizes)
        with torch.no_grad():
            for name, value in self.standard_parameters().items():
                model.get_parameter(name).copy_(value)
        return model

    WEIGHTS: ClassVar[str] = "reduced.safetensors"

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> ReducedModel:
        """The reduced model ``save_pretrained`` (or ``symcomp reduce``) wrote: ``path`` is the
        folder holding ``reduced.safetensors``, or that file."""
        tensors, sizes = cls.read_weights(path, cls.WEIGHTS, "reduced")
        record = {k[len("choice.") :]: v for k, v in tensors.items() if k.startswith("choice.")}
        free = {k[len("free.") :]: v for k, v in tensors.items() if k.startswith("free.")}
        stored = next(iter(free.values())).dtype
        out = cls(dtype=dtype or stored, device=device, _record=record, **sizes)
        expected = {name: out.free[_key(name)] for name in out._shapes}
        cls.check_names(path, set(free), set(expected))
        with torch.no_grad():
            for name, p in expected.items():
                if free[name].shape != p.shape:
                    raise ValueError(
                        f"{path}: free entries of {name!r}: {free[name].numel()}, "
                        f"the chart's choices leave {p.numel()}"
                    )
                p.copy_(free[name])
        return out

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write the free entries and the chart's choices to ``path/reduced.safetensors``."""
        tensors = {f"free.{name}": self.free[_key(name)].detach() for name in self._shapes}
        tensors |= {f"choice.{key}": value for key, value in self.record.items()}
        return self.write_weights(Path(path) / self.WEIGHTS, tensors, "reduced", self.sizes)

    # --- the function ------------------------------------------------------------------------

    def use_numerics(self, numerics: str) -> ReducedModel:
        """This model, rounding as ``numerics`` says (its standard model's forward does the
        work): see :meth:`symcomp_runtime.weights.Pretrained.use_numerics`."""
        return use_numerics(self, numerics)  # type: ignore[arg-type, return-value]

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *, cache: Cache | None = None
    ) -> Tensor:
        """Logits (B, T, V): the standard forward (its padding mask and key/value cache too) on
        the rebuilt parameters."""
        params = self.standard_parameters()
        args, kwargs = (input_ids, attention_mask), {"cache": cache}
        return torch.func.functional_call(self._shell, params, args, kwargs)

    def log_probs(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return torch.log_softmax(self.forward(input_ids, attention_mask), dim=-1)

    def generate(self, input_ids: Tensor, max_new_tokens: int, **kwargs) -> Tensor:
        """Greedy decoding with a key/value cache, as the standard model's ``generate`` (the
        parameters are rebuilt once per token): a causal language model's only."""
        if not hasattr(self.standard, "generate"):
            raise TypeError(f"{self.standard.__name__} is not a causal language model")
        return greedy(self, input_ids, max_new_tokens, **kwargs)

    def compiled(self, **kwargs) -> nn.Module:
        """``torch.compile`` of this module (``kwargs`` go to torch.compile)."""
        return torch.compile(self, **kwargs)

    @classmethod
    def _default_record(cls, shapes, sizes) -> dict[str, Tensor]:
        """Discrete choices of the right sizes for a fresh instance: those of a fixed random
        point (``from_standard`` and ``load_state_dict`` replace them)."""
        generator = torch.Generator().manual_seed(0)
        params = {
            name: torch.randn(shape, generator=generator, dtype=torch.float64)
            for name, shape in shapes.items()
        }
        _, record = canonicalize(cls.chart, params, sizes)
        return record
