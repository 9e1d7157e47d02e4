"""Training loss: per-class binary cross-entropy on the final and auxiliary outputs."""
import math
from typing import Dict, Sequence

import torch
import torch.nn.functional as F

# Elements of the up-sampled logits that the chunked loss handles at most at once (16 MB in
# float32).
LOSS_ELEMENTS_PER_CHUNK = 1 << 22


def check_labels(labels: torch.Tensor, num_classes: int, ignore_value: int) -> None:
    """Raise if a label of ``labels`` (B, H, W) is neither a class of the vocabulary nor ignored.
    It reads the labels: call it on the host's copy (on a GPU it would wait for the queued work)."""
    valid = labels != ignore_value
    outside = valid & ((labels < 0) | (labels >= num_classes))
    if bool(outside.any()):
        bad = torch.unique(labels[outside]).tolist()
        raise ValueError(
            f"Labels {bad} are outside the {num_classes}-class vocabulary (ignore value "
            f"{ignore_value}): check the dataset and MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON"
        )


def one_hot_targets(labels: torch.Tensor, classes: range, ignore_value: int) -> torch.Tensor:
    """(B, H, W) train ids -> (B, len(classes), H, W) float targets of the classes ``classes``;
    ignored pixels are all zero."""
    ids = torch.arange(classes.start, classes.stop, device=labels.device).view(1, -1, 1, 1)
    return ((labels.unsqueeze(1) == ids) & (labels != ignore_value).unsqueeze(1)).float()


def sem_seg_losses(
    logits: Sequence[torch.Tensor], labels: torch.Tensor, ignore_value: int
) -> Dict[str, torch.Tensor]:
    """
    Args:
        logits: final then auxiliary logit maps, each (B, T, h_i, w_i).
        labels: (B, H, W) train ids with ``ignore_value``, checked by :func:`check_labels`.
    Returns:
        ``loss_sem_seg_i``: mean BCE of output i, up-sampled (bilinear) to the label size.
    """
    num_classes = logits[0].shape[1]
    targets = one_hot_targets(labels, range(num_classes), ignore_value)
    return {
        f"loss_sem_seg_{i}": F.binary_cross_entropy_with_logits(
            F.interpolate(x, size=labels.shape[-2:], mode="bilinear", align_corners=False), targets
        )
        for i, x in enumerate(logits)
    }


class ChunkedBCE(torch.autograd.Function):
    """Mean BCE of logits up-sampled to the label size (as in ``sem_seg_losses``), computed a
    chunk of classes at a time together with its gradient: the up-sampled logits and targets
    of all classes never exist at once, and the backward pass only scales the stored gradient,
    which has the logits' (low) resolution.

    The gradient of the BCE with logits x and targets t is sigmoid(x) - t, divided by the
    number of elements (as autograd's mean reduction does) and taken back through the
    up-sampling. In float32 it equals ``sem_seg_losses``'s up to rounding: PyTorch's CPU
    bilinear kernel can round a chunk of classes differently from all of them at once. Under
    autocast the up-sampling and the stored gradient stay float32: the gradient, about
    1 / (T H W) per element before a float16 gradient scaler multiplies it, would underflow
    in float16.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, ignore_value: int) -> torch.Tensor:
        """logits: (B, T, h, w); labels: (B, H, W). Returns the float32 mean over B*T*H*W.

        The T classes go in equal chunks of at most ``LOSS_ELEMENTS_PER_CHUNK // (B H W)``."""
        num_classes = logits.shape[1]
        count = num_classes * labels.numel()
        num_chunks = math.ceil(num_classes / max(1, LOSS_ELEMENTS_PER_CHUNK // labels.numel()))
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        grad = torch.empty_like(logits, dtype=torch.float32)
        for chunk in torch.arange(num_classes).tensor_split(num_chunks):
            classes = range(int(chunk[0]), int(chunk[-1]) + 1)
            targets = one_hot_targets(labels, classes, ignore_value)
            with torch.enable_grad():
                part = logits[:, classes.start : classes.stop].detach().float().requires_grad_()
                upsampled = F.interpolate(part, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            total += F.binary_cross_entropy_with_logits(upsampled, targets, reduction="sum")
            grad_upsampled = (upsampled.detach().sigmoid() - targets).div_(count)
            grad[:, classes.start : classes.stop] = torch.autograd.grad(upsampled, part, grad_upsampled)[0]
        ctx.save_for_backward(grad)
        ctx.logits_dtype = logits.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        """The stored gradient (B, T, h, w) times ``grad_output`` (a scalar), in the logits' dtype."""
        (grad,) = ctx.saved_tensors
        return (grad * grad_output).to(ctx.logits_dtype), None, None


def chunked_sem_seg_losses(
    logits: Sequence[torch.Tensor], labels: torch.Tensor, ignore_value: int
) -> Dict[str, torch.Tensor]:
    """``sem_seg_losses`` a chunk of classes at a time (``ChunkedBCE``): the same values and
    gradients up to float32 rounding, without the full-resolution logits and targets of all
    classes."""
    return {f"loss_sem_seg_{i}": ChunkedBCE.apply(x, labels, ignore_value) for i, x in enumerate(logits)}
