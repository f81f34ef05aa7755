"""The registry itself: factories by name, and the counts ``fervid models`` prints.

Family modules import :func:`register_model` from here (not from the package), so the
package can import the families without a cycle.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import BadInputError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DOCS: dict[str, str] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a factory ``fn(num_classes=7, **kw) -> nn.Module`` under its name."""
    _REGISTRY[fn.__name__] = fn
    _DOCS[fn.__name__] = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def describe_model(name: str) -> str:
    return _DOCS.get(name, "")


def create_model(name: str, num_classes: int = 7, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise BadInputError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int = 48) -> int:
    """Floating-point operations (multiply and add counted apart) for one face, by torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)  # the probe goes where the weights are (a GPU in training)
    probe = torch.zeros(1, 1, input_size, input_size, device=param.device if param is not None else "cpu")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(probe)
    model.train(was_training)
    return int(counter.get_total_flops())

