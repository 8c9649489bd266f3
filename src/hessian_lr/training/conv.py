"""A batched forward for K stacked :class:`~hessian_lr.workloads.convolution.Mnist1dCNN` models.

The generic forward (``vmap(functional_call)``) turns each ``conv1d`` into one grouped
convolution with ``groups = K``, which on CPU is slower than K separate convolutions (batched
training gained little per model over one at a time; ``docs/engine.md``). Here every convolution is an im2col
copy plus one batched GEMM over the stacked weights,

    out[k] = W[k] (Cout x Cin*kernel) @ col[k] (Cin*kernel x Lout*B) + b[k]    (torch.baddbmm)

and the activations stay ``[K, C, L, B]`` (batch innermost) from layer to layer: a GEMM's output
*is* the next layer's input layout, the im2col columns are ``kernel`` strided slices of it (runs
of contiguous ``B``-vectors), and the final ``flatten`` (channel-major, as the module's
``h.flatten(1)``) is the free view ``[K, C*L, B]`` that the linear layer's GEMM takes as it is:
no permute copies between layers. The whole network is one autograd node (:class:`_CNN`) whose
backward is written out: ``bmm`` for weight and input gradients, col2im (a few strided copies
and adds), ReLU's mask by ``threshold_backward``, bias gradients as sums. ``aten::unfold`` /
``as_strided`` are not used: their generic backwards cost about a third of a step.

Under ``create_graph=True`` the backward differentiates a composite of ordinary autograd ops
instead (:func:`_composite_logits`: the same GEMMs, with im2col and col2im as a pair of
autograd Functions that are each other's backward), so the result is differentiable to any
order (Hessian-vector products equal vmap's; the tests check it). torch.func transforms
(``vmap``/``grad``/``jvp`` over this forward) are not supported; the engine uses autograd.

The layer hyperparameters (channels, kernel sizes, strides, paddings, the linear layer's size)
are read from the module; a model outside this shape (dilation, groups, non-zero padding modes,
string padding, no bias, extra parameters, a subclass) gets the generic forward.

What it gains over the generic forward is measured by ``benchmarks/batched_training.py
--workload mnist1d-cnn`` and recorded in ``docs/engine.md``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hessian_lr.training.forward import BatchedForward, generic_forward, register_forward
from hessian_lr.workloads.convolution import Mnist1dCNN

__all__ = ["ConvLayer", "conv_layers", "batched_cnn_forward", "im2col", "col2im"]

_CONVS = ("conv1", "conv2", "conv3")


@dataclass(frozen=True)
class ConvLayer:
    """One ``Conv1d``'s shape: ``in_channels -> out_channels``, ``kernel``, ``stride``, ``padding``."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int

    def out_length(self, length: int) -> int:
        return (length + 2 * self.padding - self.kernel) // self.stride + 1


def conv_layers(model: nn.Module) -> list[ConvLayer] | None:
    """The convolutions of an :class:`Mnist1dCNN` in order, or None if any is outside what the
    batched forward implements (then the model gets the generic forward)."""
    if type(model) is not Mnist1dCNN or any(True for _ in model.buffers()):
        return None
    layers, channels = [], 1  # the module's forward feeds x.unsqueeze(1): one input channel
    for name in _CONVS:
        conv = getattr(model, name, None)
        if type(conv) is not nn.Conv1d or conv.bias is None or conv.groups != 1 or conv.padding_mode != "zeros":
            return None
        if isinstance(conv.padding, str) or conv.dilation != (1,) or conv.in_channels != channels:
            return None
        (kernel,), (stride,), (padding,) = conv.kernel_size, conv.stride, conv.padding
        layers.append(ConvLayer(name, conv.in_channels, conv.out_channels, kernel, stride, padding))
        channels = conv.out_channels
    linear = getattr(model, "linear", None)
    if type(linear) is not nn.Linear or linear.bias is None or linear.in_features % channels:
        return None
    names = {name for name, _ in model.named_parameters()}
    if names != {f"{layer}.{p}" for layer in (*_CONVS, "linear") for p in ("weight", "bias")}:
        return None  # extra parameters the forward would ignore
    return layers


# -- im2col / col2im ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _taps(length: int, out_length: int, kernel: int, stride: int, padding: int) -> tuple:
    """Per kernel tap ``j`` that reads any input: ``(j, t0, t1, rows)``, the output positions
    ``t0 .. t1-1`` that read an input inside ``0 .. length-1`` (the others read padding) and the
    slice of input rows they read, ``stride*t + j - padding``."""
    taps = []
    for j in range(kernel):
        t0 = max(0, -((j - padding) // stride))  # the first t with stride*t + j - padding >= 0
        t1 = min(out_length, (length - 1 + padding - j) // stride + 1)
        if t1 > t0:
            first = stride * t0 + j - padding
            taps.append((j, t0, t1, slice(first, first + stride * (t1 - t0 - 1) + 1, stride)))
    return tuple(taps)


@functools.lru_cache(maxsize=64)
def _col2im_plan(length: int, out_length: int, kernel: int, stride: int, padding: int) -> tuple:
    """How :func:`_col2im` fills each residue class ``r, r+stride, ...`` of the input rows from the
    taps that read it: ``(rows, full, partial)`` with ``full`` the taps covering every row of
    the class as ``(j, t0, t1)`` and ``partial`` the others as ``(j, t0, t1, class rows)``."""
    plan = []
    for residue in range(min(stride, length)):
        count = (length - residue + stride - 1) // stride
        full, partial = [], []
        for j, t0, t1, rows in _taps(length, out_length, kernel, stride, padding):
            if rows.start % stride != residue:
                continue
            q0 = rows.start // stride
            if q0 == 0 and t1 - t0 == count:
                full.append((j, t0, t1))
            else:
                partial.append((j, t0, t1, slice(q0, q0 + t1 - t0)))
        plan.append((slice(residue, None, stride), tuple(full), tuple(partial)))
    return tuple(plan)


def _im2col(x: Tensor, kernel: int, stride: int, padding: int, out_length: int) -> Tensor:
    """``x`` ``[K, C, L, B]`` (any strides) -> columns ``[K, C, kernel, Lout, B]`` (contiguous),
    ``col[:, c, j, t] = x[:, c, stride*t + j - padding]`` (zero where that is padding)."""
    k, c, length, b = x.shape
    col = x.new_empty(k, c, kernel, out_length, b)
    covered = [False] * kernel
    for j, t0, t1, rows in _taps(length, out_length, kernel, stride, padding):
        covered[j] = True
        if t0:
            col[:, :, j, :t0].zero_()
        if t1 < out_length:
            col[:, :, j, t1:].zero_()
        col[:, :, j, t0:t1].copy_(x[:, :, rows])
    for j in range(kernel):
        if not covered[j]:
            col[:, :, j].zero_()
    return col


def _col2im(col: Tensor, kernel: int, stride: int, padding: int, length: int) -> Tensor:
    """The adjoint of :func:`_im2col`: columns ``[K, C, kernel, Lout, B]`` -> ``[K, C, L, B]``,
    every column entry added to the input row it was read from (per residue class of rows: the
    first two taps that cover it all in one ``add(out=)``, no zero fill where a tap covers it)."""
    k, c, out_length, b = col.shape[0], col.shape[1], col.shape[3], col.shape[4]
    x = col.new_empty(k, c, length, b)
    for rows, full, partial in _col2im_plan(length, out_length, kernel, stride, padding):
        target = x[:, :, rows]
        if len(full) >= 2:
            (j, t0, t1), (i, s0, s1) = full[:2]
            torch.add(col[:, :, j, t0:t1], col[:, :, i, s0:s1], out=target)
        elif full:
            j, t0, t1 = full[0]
            target.copy_(col[:, :, j, t0:t1])
        else:
            target.zero_()
        for j, t0, t1 in full[2:]:
            target.add_(col[:, :, j, t0:t1])
        for j, t0, t1, part in partial:
            target[:, :, part].add_(col[:, :, j, t0:t1])
    return x


class _Im2col(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, kernel: int, stride: int, padding: int, out_length: int) -> Tensor:
        return _im2col(x, kernel, stride, padding, out_length)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, ctx.kernel, ctx.stride, ctx.padding, _ = inputs
        ctx.length = x.shape[2]

    @staticmethod
    def backward(ctx, grad: Tensor):
        return col2im(grad, ctx.kernel, ctx.stride, ctx.padding, ctx.length), None, None, None, None


class _Col2im(torch.autograd.Function):
    @staticmethod
    def forward(col: Tensor, kernel: int, stride: int, padding: int, length: int) -> Tensor:
        return _col2im(col, kernel, stride, padding, length)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        col, ctx.kernel, ctx.stride, ctx.padding, _ = inputs
        ctx.out_length = col.shape[3]

    @staticmethod
    def backward(ctx, grad: Tensor):
        return im2col(grad, ctx.kernel, ctx.stride, ctx.padding, ctx.out_length), None, None, None, None


def im2col(x: Tensor, kernel: int, stride: int, padding: int, out_length: int) -> Tensor:
    """Differentiable (to any order) :func:`_im2col`: ``[K, C, L, B]`` -> ``[K, C, kernel, Lout, B]``."""
    return _Im2col.apply(x, kernel, stride, padding, out_length)


def col2im(col: Tensor, kernel: int, stride: int, padding: int, length: int) -> Tensor:
    """Differentiable (to any order) adjoint of :func:`im2col`."""
    return _Col2im.apply(col, kernel, stride, padding, length)


# -- the forward ---------------------------------------------------------------------------------
def _composite_logits(layers: list[ConvLayer], params: list[Tensor], h: Tensor) -> Tensor:
    """``h``: inputs ``[K, 1, L, B]`` -> logits ``[K, classes, B]``, in ordinary autograd ops
    (and the differentiable im2col): differentiable to any order."""
    k, b = h.shape[0], h.shape[3]
    for i, layer in enumerate(layers):
        out_length = layer.out_length(h.shape[2])
        col = im2col(h, layer.kernel, layer.stride, layer.padding, out_length)
        weight = params[2 * i].reshape(k, layer.out_channels, layer.in_channels * layer.kernel)
        out = torch.baddbmm(params[2 * i + 1].unsqueeze(2), weight,
                            col.view(k, layer.in_channels * layer.kernel, out_length * b))
        h = out.relu().view(k, layer.out_channels, out_length, b)
    return torch.baddbmm(params[-1].unsqueeze(2), params[-2], h.reshape(k, -1, b))


class _CNN(torch.autograd.Function):
    """The whole network as one autograd node: forward by im2col + ``baddbmm`` + ReLU per
    layer, backward written out (``bmm`` for the weight and input gradients, col2im, the bias
    gradients as sums), so a step runs no per-op autograd bookkeeping. Under ``create_graph``
    the backward instead differentiates :func:`_composite_logits` (same values), which keeps
    the result differentiable."""

    @staticmethod
    def forward(ctx, layers: list[ConvLayer], inputs: Tensor, *params: Tensor) -> Tensor:
        h = inputs
        k, b = h.shape[0], h.shape[3]
        saved, lengths = [], []
        for i, layer in enumerate(layers):
            length = h.shape[2]
            out_length = layer.out_length(length)
            col = _im2col(h, layer.kernel, layer.stride, layer.padding, out_length)
            col = col.view(k, layer.in_channels * layer.kernel, out_length * b)
            weight = params[2 * i].reshape(k, layer.out_channels, layer.in_channels * layer.kernel)
            out = torch.baddbmm(params[2 * i + 1].unsqueeze(2), weight, col).relu_()
            saved += [col, out]
            lengths.append(length)
            h = out.view(k, layer.out_channels, out_length, b)
        features = h.reshape(k, -1, b)
        ctx.layers, ctx.lengths = layers, lengths
        ctx.save_for_backward(inputs, *params, *saved, features)
        return torch.baddbmm(params[-1].unsqueeze(2), params[-2], features)

    @staticmethod
    def backward(ctx, grad: Tensor):
        layers = ctx.layers
        tensors = ctx.saved_tensors
        n = 2 * len(layers) + 2
        inputs, params, saved, features = tensors[0], tensors[1 : 1 + n], tensors[1 + n : -1], tensors[-1]
        if torch.is_grad_enabled():  # create_graph: differentiate the composite forward instead
            wanted = [i for i, needed in enumerate(ctx.needs_input_grad[1:]) if needed]
            every = [inputs, *params]
            logits = _composite_logits(layers, list(params), inputs)
            found = torch.autograd.grad(logits, [every[i] for i in wanted], grad, create_graph=True,
                                        allow_unused=True)
            grads = [None] * len(every)
            for i, g in zip(wanted, found):
                grads[i] = g
            return None, *grads
        k = grad.shape[0]
        grads: list[Tensor | None] = [None] * n
        grads[-2] = torch.bmm(grad, features.transpose(1, 2))
        grads[-1] = grad.sum(2)
        dh = torch.bmm(params[-2].transpose(1, 2), grad)  # [K, C·L, B]
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            col, out = saved[2 * i], saved[2 * i + 1]
            dz = torch.ops.aten.threshold_backward(dh.view(out.shape), out, 0.0)
            weight = params[2 * i].reshape(k, layer.out_channels, -1)
            grads[2 * i] = torch.bmm(dz, col.transpose(1, 2)).view(params[2 * i].shape)
            grads[2 * i + 1] = dz.sum(2)
            if i or ctx.needs_input_grad[1]:
                dcol = torch.bmm(weight.transpose(1, 2), dz)
                out_length = layers[i].out_length(ctx.lengths[i])
                dh = _col2im(dcol.view(k, layer.in_channels, layer.kernel, out_length, -1),
                             layer.kernel, layer.stride, layer.padding, ctx.lengths[i])
        return None, (dh if ctx.needs_input_grad[1] else None), *grads


_PARAMS = [f"{layer}.{p}" for layer in (*_CONVS, "linear") for p in ("weight", "bias")]


def _logits(layers: list[ConvLayer], params: dict[str, Tensor], h: Tensor) -> Tensor:
    """``h``: inputs ``[K, 1, L, B]`` -> logits ``[K, B, classes]``."""
    return _CNN.apply(layers, h, *(params[name] for name in _PARAMS)).transpose(1, 2)


def batched_cnn_forward(model: nn.Module) -> BatchedForward:
    """The batched im2col/GEMM forward for ``model`` (an :class:`Mnist1dCNN`); the generic
    forward for any model outside its shape (:func:`conv_layers`)."""
    layers = conv_layers(model)
    if layers is None:
        return generic_forward(model)

    def own(params: dict[str, Tensor], x: Tensor) -> Tensor:  # x [K, B, L]
        return _logits(layers, params, x.transpose(1, 2).unsqueeze(1))

    def shared(params: dict[str, Tensor], x: Tensor) -> Tensor:  # x [B, L], every model
        k = params["linear.weight"].shape[0]
        return _logits(layers, params, x.t().unsqueeze(0).unsqueeze(0).expand(k, 1, -1, -1))

    return BatchedForward(own, shared, name="im2col+baddbmm (Mnist1dCNN)")


register_forward(Mnist1dCNN, batched_cnn_forward)
