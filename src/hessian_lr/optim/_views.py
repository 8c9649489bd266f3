"""How the optimizer sees parameters, gradients and its state: as plain dense real tensors.

* A **complex** tensor is its real view (``torch.view_as_real``: shape ``(*shape, 2)``), as torch's
  own optimizers treat it: a complex parameter trains exactly like its real twin, and its curvature
  state is real (one estimate per real coordinate).
* A **DTensor** (FSDP2's ``fully_shard``, tensor parallelism) is its local shard. The grad-diff
  step is elementwise, so each rank applies to its shard exactly the operations an unsharded run
  applies to those elements (and any implementation, the C++ kernel included, can run on them).
  Only the finiteness check needs the other ranks: :func:`agree_on_first_nonfinite` makes every
  rank refuse or skip a step together.

Nothing here imports ``torch.distributed`` unless DTensors exist (their module is then loaded).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["View", "view_of", "to_view", "state_target", "agree_on_first_nonfinite", "device_meshes"]


class View(enum.IntEnum):
    """What :func:`to_view` does to a tensor of one parameter."""

    PLAIN = 0  # nothing
    REAL = 1  # complex -> torch.view_as_real
    LOCAL = 2  # DTensor -> its local shard


def _dtensor_type() -> type | None:
    """The DTensor class if its module is loaded (no DTensor can exist otherwise)."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_dtensor(t: Any) -> bool:
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(t, dtensor)


def view_of(param: Tensor) -> View:
    """How ``param``'s gradient and state are seen; complex DTensors are refused (ValueError)."""
    if is_dtensor(param):
        if param.is_complex():
            raise ValueError("HessianLRAdaptation does not support complex DTensor parameters")
        return View.LOCAL
    return View.REAL if param.is_complex() else View.PLAIN


def to_view(t: Tensor, view: View) -> Tensor:
    """``t`` as the optimizer's math sees it (no copy: a view or the local shard)."""
    if view is View.REAL:
        return torch.view_as_real(t)
    if view is View.LOCAL:
        return t.to_local()  # under no_grad: the shard itself
    return t


def state_target(param: Tensor) -> Tensor:
    """The tensor the state is shaped after: the real view of a complex parameter, else itself
    (a DTensor's state is a DTensor with the same sharding, so checkpoints shard it alike)."""
    return torch.view_as_real(param.detach()) if param.is_complex() else param.detach()


def device_meshes(params: Iterable[Tensor]) -> list[Any]:
    """The distinct device meshes of the DTensor parameters (empty without DTensors)."""
    meshes: dict[int, Any] = {}
    for p in params:
        if is_dtensor(p):
            meshes.setdefault(id(p.device_mesh), p.device_mesh)
    return list(meshes.values())


def agree_on_first_nonfinite(local: int | None, count: int, meshes: list[Any]) -> int | None:
    """The smallest index any rank found (``local`` is this rank's), via one all-reduce (MIN) per
    mesh dimension, so all ranks skip or refuse a step together and name the same parameter."""
    if not meshes:
        return local
    import torch.distributed as dist

    flag = torch.tensor([count if local is None else local], dtype=torch.int64)
    for mesh in meshes:
        flag = flag.to(mesh.device_type)
        for group in mesh.get_all_groups():
            dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=group)
    index = int(flag.item())
    return None if index >= count else index
