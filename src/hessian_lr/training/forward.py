"""Batched forwards: the outputs of K stacked copies of a model in one call.

``batched_forward(model)`` returns a :class:`BatchedForward` whose ``own(params, x)`` maps
stacked parameters (``{name: [K, *shape]}``) and per-model inputs ``[K, B, ...]`` to outputs
``[K, B, ...]``, and ``shared(params, x)`` does the same for inputs ``[B, ...]`` that every model
sees (validation, test). Both are differentiable with ordinary autograd, so the arm's own
backward (including ``create_graph=True``) runs through them.

The generic forward is ``torch.func.vmap`` over ``torch.func.functional_call`` and serves any
model without changing buffers. A specialised forward for a model class (registered with
:func:`register_forward`) may replace it where it is measured faster and tested equal (tests
compare it with the generic one on every registered class).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["BatchedForward", "batched_forward", "register_forward", "generic_forward"]

Forward = Callable[[dict[str, Tensor], Tensor], Tensor]


@dataclass(frozen=True)
class BatchedForward:
    own: Forward  # params [K, ...], x [K, B, ...] -> [K, B, ...]
    shared: Forward  # params [K, ...], x [B, ...] -> [K, B, ...]
    name: str = "vmap(functional_call)"


def generic_forward(model: nn.Module) -> BatchedForward:
    from torch.func import functional_call, vmap

    def outputs_of(params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, params, (x,))

    return BatchedForward(vmap(outputs_of), vmap(outputs_of, in_dims=(0, None)))


_SPECIALISED: dict[type, Callable[[nn.Module], BatchedForward]] = {}


def register_forward(model_type: type, make: Callable[[nn.Module], BatchedForward]) -> None:
    """Use ``make(model)`` instead of the generic forward for models of exactly ``model_type``."""
    _SPECIALISED[model_type] = make


def batched_forward(model: nn.Module) -> BatchedForward:
    """The fastest batched forward for ``model``: a specialised one for its class, else generic."""
    make = _SPECIALISED.get(type(model))
    return make(model) if make is not None else generic_forward(model)
