"""Steps that act on each class map (or each pixel) alone, run a chunk at a time.

``map_chunks`` cuts its inputs into chunks, applies a function to each and joins the outputs,
with or without autograd. In training it can recompute each chunk in the backward pass
instead of keeping its activations (``MODEL.SEM_SEG_HEAD.TRAIN_CHECKPOINT_CHUNKS``).
"""
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

Outputs = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


def size_min(a: int, b: int) -> int:
    """The smaller of two sizes; in an exported graph (symbolic sizes) without a guard on them
    (``torch.sym_min``). Elsewhere Python's ``min``, which also takes torch.jit's traced sizes."""
    return torch.sym_min(a, b) if torch.compiler.is_exporting() else min(a, b)


def size_max(a: int, b: int) -> int:
    """The larger of two sizes, as :func:`size_min`."""
    return torch.sym_max(a, b) if torch.compiler.is_exporting() else max(a, b)


def chunk_sizes(total: int, chunk_size: int, group: Optional[int] = None) -> List[int]:
    """Sizes of consecutive chunks of at most ``chunk_size`` rows covering ``total`` rows; with
    ``group``, no chunk crosses a multiple of ``group`` (the classes of one image).

    While a graph is exported (``torch.compiler.is_exporting()``, e.g. to ONNX) the sizes are
    symbolic and the graph must serve any of them: one chunk per group then.
    """
    group = group or total
    if torch.compiler.is_exporting():
        return [group] * (total // group)
    sizes = []
    for first in range(0, total, group):
        end = min(first + group, total)
        sizes += [min(chunk_size, end - start) for start in range(first, end, chunk_size)]
    return sizes


def _buffer(value: torch.Tensor, dim: int, total: int) -> torch.Tensor:
    """An empty tensor shaped like ``value`` but ``total`` long along ``dim``, channels-last
    where ``value`` is a channels-last map."""
    shape = list(value.shape)
    shape[dim] = total
    channels_last = value.dim() == 4 and value.is_contiguous(memory_format=torch.channels_last)
    return torch.empty(shape, dtype=value.dtype, device=value.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class WriteRows(torch.autograd.Function):
    """``buffer.narrow(dim, start, len(value))`` set to ``value`` in place, with a backward pass
    that copies nothing: the value's gradient is a view of the buffer's, and the buffer's
    earlier version gets the whole gradient, not a copy with those rows zeroed. That is exact
    for the writes of ``map_chunks``, which fill disjoint rows of a buffer that nothing else
    reads or writes, starting from an empty one that takes no gradient."""

    @staticmethod
    def forward(ctx, buffer: torch.Tensor, value: torch.Tensor, dim: int, start: int) -> torch.Tensor:
        ctx.rows = (dim, start, value.shape[dim])
        buffer.narrow(dim, start, value.shape[dim]).copy_(value)
        ctx.mark_dirty(buffer)
        return buffer

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, grad.narrow(*ctx.rows), None, None


class _Plan(NamedTuple):
    """How ``CheckpointedChunks`` cuts its tensors: ``function``, the chunk ``sizes`` along
    ``dim``, how many tensors are cut (``num_inputs``) and shared (``num_shared``), and for each
    chunk the indices of the shared tensors it gets (``extras``)."""

    function: Callable[..., Outputs]
    sizes: Sequence[int]
    dim: int
    num_inputs: int
    num_shared: int
    extras: Sequence[Tuple[int, ...]]


class CheckpointedChunks(torch.autograd.Function):
    """``map_chunks`` with activation checkpointing, as one autograd node for all chunks.

    The forward pass runs ``function`` on each chunk without autograd and writes its outputs
    into whole buffers. The backward pass runs each chunk again, with autograd, and writes the
    cut inputs' gradients into whole buffers; those of the shared tensors and of the parameters
    are summed over the chunks. No chunk leaves graph nodes or tensors behind: on the CPU these
    would stay scattered between the chunks' freed activations and hold a large part of the
    heap. Autocast is restored for the recomputation.
    """

    @staticmethod
    def forward(ctx, plan: _Plan, *tensors: torch.Tensor) -> Outputs:
        """``tensors``: the cut inputs, the shared tensors, then the parameters ``function`` uses."""
        ctx.plan, ctx.parameters = plan, tensors[plan.num_inputs + plan.num_shared :]
        ctx.save_for_backward(*tensors[: plan.num_inputs + plan.num_shared])
        device_type = tensors[0].device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        inputs, shared = tensors[: plan.num_inputs], tensors[plan.num_inputs : plan.num_inputs + plan.num_shared]
        buffers, start, total = None, 0, sum(plan.sizes)
        for size, extra in zip(plan.sizes, plan.extras):
            outputs = plan.function(*(x.narrow(plan.dim, start, size) for x in inputs), *(shared[i] for i in extra))
            ctx.single = isinstance(outputs, torch.Tensor)
            outputs = (outputs,) if ctx.single else outputs
            if buffers is None:
                buffers = [_buffer(o, plan.dim, total) for o in outputs]
            for buffer, output in zip(buffers, outputs):
                buffer.narrow(plan.dim, start, size).copy_(output)
            start += size
        return buffers[0] if ctx.single else tuple(buffers)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        """``grads``: those of the joined outputs. Returns those of ``tensors`` (after none for
        the plan)."""
        plan, saved = ctx.plan, ctx.saved_tensors
        inputs, shared = saved[: plan.num_inputs], saved[plan.num_inputs :]
        grad_inputs = [torch.zeros_like(x) if x.requires_grad else None for x in inputs]
        grad_shared = [torch.zeros_like(x) if x.requires_grad else None for x in shared]
        grad_parameters = [torch.zeros_like(p) for p in ctx.parameters]
        device_type, enabled, dtype = ctx.autocast
        start = 0
        for size, extra in zip(plan.sizes, plan.extras):
            pieces = [x.narrow(plan.dim, start, size).detach().requires_grad_(x.requires_grad) for x in inputs]
            extras = [shared[i].detach().requires_grad_(shared[i].requires_grad) for i in extra]
            with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
                outputs = plan.function(*pieces, *extras)
            outputs = (outputs,) if ctx.single else outputs
            pairs = [(o, g.narrow(plan.dim, start, size)) for o, g in zip(outputs, grads) if o.requires_grad]
            wanted = [t for t in (*pieces, *extras, *ctx.parameters) if t.requires_grad]
            found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
            for piece, total in zip(pieces, grad_inputs):
                grad = next(found) if piece.requires_grad else None
                if grad is not None:
                    total.narrow(plan.dim, start, size).copy_(grad)
            for e, i in zip(extras, extra):
                grad = next(found) if e.requires_grad else None
                if grad is not None:
                    grad_shared[i] += grad
            for total in grad_parameters:
                grad = next(found)
                if grad is not None:
                    total += grad
            start += size
        return (None, *grad_inputs, *grad_shared, *grad_parameters)


def map_chunks(
    function: Callable[..., Outputs],
    inputs: Sequence[torch.Tensor],
    sizes: Sequence[int],
    extras: Optional[Sequence[tuple]] = None,
    *,
    dim: int = 0,
    recompute: bool = False,
    modules: Sequence[nn.Module] = (),
) -> Outputs:
    """Apply ``function`` to consecutive chunks of ``inputs`` along ``dim`` and join its outputs.

    Args:
        function: ``function(*chunks, *extra)`` -> a tensor or a tuple of tensors, each as long
            along ``dim`` as the chunk. It draws no random numbers and changes no input.
        inputs: tensors of the same length along ``dim``, cut into chunks of ``sizes``.
        extras: for each chunk, more tensor arguments for ``function``, which chunks may share
            (default: none).
        recompute: with autograd, recompute each chunk in the backward pass instead of keeping
            its activations (``CheckpointedChunks``): the same gradients for one more forward
            computation.
        modules: with ``recompute``, every module whose parameters ``function`` uses (the
            others would get no gradient).
    Returns:
        the outputs of all chunks, joined along ``dim`` (a tensor or a tuple, as ``function``).

    Each output is written into a buffer allocated at the first chunk and freed: no output is
    held twice, as by a concatenation. Without ``recompute``, autograd keeps each chunk's
    graph; the writes (``WriteRows``) take the gradients back without copies, and the inputs
    are split into views, whose gradients autograd joins once (slicing them would make a
    whole-size gradient for every chunk). In an exported graph (one chunk) ``function`` runs on
    the inputs themselves.
    """
    extras = extras or [()] * len(sizes)
    if torch.compiler.is_exporting():  # one chunk (chunk_sizes), of a symbolic size: no buffer
        return function(*inputs, *extras[0])
    if recompute and torch.is_grad_enabled():
        shared: List[torch.Tensor] = []
        for extra in extras:
            shared += [t for t in extra if not any(t is s for s in shared)]
        indices = [tuple(next(i for i, s in enumerate(shared) if s is t) for t in extra) for extra in extras]
        plan = _Plan(function, list(sizes), dim, len(inputs), len(shared), indices)
        parameters = [p for m in modules for p in m.parameters() if p.requires_grad]
        return CheckpointedChunks.apply(plan, *inputs, *shared, *parameters)
    pieces = zip(*(x.split(list(sizes), dim) for x in inputs))
    total, start, buffers = sum(sizes), 0, None
    for piece, extra, size in zip(pieces, extras, sizes):
        outputs = function(*piece, *extra)
        single = isinstance(outputs, torch.Tensor)
        outputs = (outputs,) if single else outputs
        if buffers is None:
            buffers = [_buffer(o, dim, total) for o in outputs]
        buffers = [WriteRows.apply(b, o, dim, start) for b, o in zip(buffers, outputs)]
        start += size
    return buffers[0] if single else tuple(buffers)
