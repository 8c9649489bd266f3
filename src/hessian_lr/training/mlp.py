"""A hand-written batched forward/backward for K ReLU MLPs under mean cross-entropy.

One of the training engine's gradient paths (:mod:`hessian_lr.training.stacked`): for an
``nn.Sequential`` of ``Linear`` (with bias) and ``ReLU`` layers trained on cross-entropy it
writes every model's gradient straight into stacked ``[K, *shape]`` buffers with batched GEMMs
(``torch.baddbmm`` / ``torch.bmm``), with no autograd graph and no per-model ops. The optimizer
side is untouched: the arm's own optimizer reads those buffers as ``p.grad``.

Activations are kept feature-major, ``[K, features, B]`` (``zᵀ = W aᵀ + b``): against the
row-major form this turns the last layer's forward (10 outputs) into a GEMM with a wide output
and needs no transposed copies; most of a step is the eight batched GEMMs (measurements:
``docs/engine.md``).
The tests check its gradients against autograd on every model of a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["BatchedMLP"]


class BatchedMLP:
    """Forward/backward of K stacked copies of one ``Linear (ReLU Linear)*`` network.

    Args:
        model: the template network (its structure; its values are not used).
        names: the parameter names in the order of the stacked tensors the methods receive.
    """

    def __init__(self, model: nn.Sequential, names: Sequence[str]) -> None:
        index = {name: i for i, name in enumerate(names)}
        self.layers = [(index[f"{name}.weight"], index[f"{name}.bias"])
                       for name, module in model.named_children() if isinstance(module, nn.Linear)]
        self._views: list[tuple[tuple[int, ...], list[tuple[Tensor, Tensor, Tensor, Tensor]]]] = []
        self._minus_ones_key: tuple | None = None
        self._minus_ones = torch.empty(0)

    @staticmethod
    def supports(model: nn.Module, loss_fn: Callable, *, l2: float = 0.0) -> bool:
        """Whether ``model`` is strictly ``Linear (ReLU Linear)*`` with biases, no buffers, trained
        with ``torch.nn.functional.cross_entropy`` and no penalty."""
        if loss_fn is not nn.functional.cross_entropy or l2 or not isinstance(model, nn.Sequential):
            return False
        if any(True for _ in model.buffers()):
            return False
        kinds = [type(m) for m in model]
        if not kinds or kinds[0] is not nn.Linear or kinds[-1] is not nn.Linear:
            return False
        for prev, cur in zip(kinds, kinds[1:]):
            if cur not in (nn.Linear, nn.ReLU) or (prev is cur is nn.ReLU) or (prev is cur is nn.Linear):
                return False
        linears = [m for m in model if isinstance(m, nn.Linear)]
        return all(m.bias is not None for m in linears) and all(
            a.out_features == b.in_features for a, b in zip(linears, linears[1:]))

    def _weights(self, tensors: Sequence[Tensor]) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """``(W, b, b as a column, Wᵀ)`` of every Linear. The same buffers (parameters,
        gradients) serve every step, so their views are kept: making them per step was ~5% of a
        step's time, in Python, where two training threads contend for the GIL."""
        key = tuple(id(t) for t in tensors) + tuple(t.data_ptr() for t in tensors[:1])
        for cached, views in self._views:
            if cached == key:
                return views
        views = [(tensors[w], tensors[b], tensors[b].unsqueeze(2), tensors[w].transpose(1, 2))
                 for w, b in self.layers]
        self._views = [(key, views), *self._views[:1]]  # the parameters' and the gradients'
        return views

    def _minus_one(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A cached tensor of -1 (the one-hot term of the softmax gradient), on the models' device."""
        key = (tuple(shape), dtype, device)
        if self._minus_ones_key != key:
            self._minus_ones_key, self._minus_ones = key, torch.full(shape, -1.0, dtype=dtype, device=device)
        return self._minus_ones

    def logits(self, params: Sequence[Tensor], x: Tensor) -> Tensor:
        """``x``: ``[K, N, in]`` (an expanded view is fine) -> logits ``[K, classes, N]``."""
        weights = self._weights(params)
        a = x.transpose(1, 2)
        for i, (w, _, bias, _) in enumerate(weights):
            a = torch.baddbmm(bias, w, a)
            if i < len(weights) - 1:
                a = a.relu_()
        return a

    def grad_(self, params: Sequence[Tensor], grads: Sequence[Tensor], x: Tensor, y: Tensor) -> None:
        """Write d(mean cross-entropy)/d(params) of every model into ``grads``.

        Args:
            params: stacked parameters ``[K, *shape]`` in ``names`` order.
            grads: buffers of the same shapes, overwritten.
            x: ``[K, B, in]`` inputs; y: ``[K, B]`` labels.
        """
        weights = self._weights(params)
        a = x.transpose(1, 2)  # [K, in, B]
        acts = [a]
        for i, (w, _, bias, _) in enumerate(weights):
            a = torch.baddbmm(bias, w, a)  # [K, out, B]
            if i < len(weights) - 1:
                a = a.relu_()
                acts.append(a)
        # d loss / d logits = (softmax - onehot) / B; a hand-written softmax is several times
        # faster than torch.softmax on these small class dimensions.
        dz = (a - a.amax(dim=1, keepdim=True)).exp_()
        dz.div_(dz.sum(dim=1, keepdim=True))
        index = y.unsqueeze(1)
        dz.scatter_add_(1, index, self._minus_one(index.shape, dz.dtype, dz.device))
        dz.mul_(1.0 / x.shape[1])
        out = self._weights(grads)
        for i in range(len(weights) - 1, -1, -1):
            torch.bmm(dz, acts[i].transpose(1, 2), out=out[i][0])
            torch.sum(dz, dim=2, out=out[i][1])
            if i:
                dz = torch.ops.aten.threshold_backward(torch.bmm(weights[i][3], dz), acts[i], 0.0)

    def loss_and_accuracy(self, params: Sequence[Tensor], x: Tensor, y: Tensor,
                          accuracy: bool = True) -> tuple[Tensor, Tensor | None]:
        """Per-model mean cross-entropy ``[K]`` and accuracy ``[K]`` (None unless ``accuracy``)."""
        logits = self.logits(params, x)  # [K, C, N]
        logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # log_softmax, faster here
        picked = logp.gather(1, y.expand(logits.shape[0], -1).unsqueeze(1)).squeeze(1)
        loss = -picked.mean(dim=1)
        if not accuracy:
            return loss, None
        return loss, (logits.argmax(dim=1) == y).float().mean(dim=1)
