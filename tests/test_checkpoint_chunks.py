"""MODEL.SEM_SEG_HEAD.TRAIN_CHECKPOINT_CHUNKS: the decoder's chunks recomputed in the backward
pass and the chunked loss give the same losses and gradients as keeping every activation, with
autocast and gradient accumulation too, and a killed training run resumes with them on."""
import subprocess

import pytest
import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils.events import EventStorage

from helpers import FAST, ROOT, SED_FIXTURE, build_sed_fixture, kill_after_first_checkpoint, tiny_model
from sed.modeling.sed import class_aggregation, loss
from sed.modeling.sed.chunks import map_chunks
from sed.train_loop import AccumulatingTrainer


@pytest.fixture(scope="module")
def model():
    """A random-weight tiny SED in training mode, 5 classes, decoder chunks of 2 class maps.
    Each test sets ``decoder.checkpoint_chunks`` itself."""
    return tiny_model("MODEL.SEM_SEG_HEAD.CLASS_CHUNK_SIZE", "2").train()


def batch(sizes, seed=0):
    """Training inputs of the given (H, W), labels in 0..4 with ignored top rows."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        labels = torch.randint(0, 5, (h, w), generator=g)
        labels[:7] = 255
        out.append({"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "sem_seg": labels})
    return out


def losses_and_gradients(model, inputs, checkpoint_chunks, amp_dtype=None):
    """One forward and backward pass: ({loss name: value}, {parameter name: gradient})."""
    model.decoder.checkpoint_chunks = checkpoint_chunks
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None):
        losses = model(inputs)
    sum(losses.values()).backward()
    return ({k: v.item() for k, v in losses.items()},
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})


def assert_same(reference, checkpointed, rel=1e-5):
    """Losses within ``rel`` relative; every gradient within ``rel`` of its largest entry."""
    (ref_losses, ref_grads), (losses, grads) = reference, checkpointed
    assert losses.keys() == ref_losses.keys() and len(losses) == 4
    for name, value in ref_losses.items():
        assert losses[name] == pytest.approx(value, rel=rel), name
    assert grads.keys() == ref_grads.keys() and len(grads) > 100
    for name, ref in ref_grads.items():
        assert torch.allclose(grads[name], ref, rtol=rel, atol=rel * float(ref.abs().max())), name


def count_calls(module):
    """A list that grows at each run of ``module.forward`` (recomputations included); undo with
    ``del module.forward``."""
    calls, forward = [], module.forward

    def counted(*args):
        calls.append(1)
        return forward(*args)

    module.forward = counted
    return calls


def test_same_losses_and_gradients_on_random_weights(model, monkeypatch):
    """Two images, 5 classes in chunks of 2 (decoder and loss), class aggregation on a few pixels
    at a time: every chunk and pixel group goes through the checkpointed path."""
    monkeypatch.setitem(class_aggregation.TOKENS_PER_CHUNK, "cpu", 20000)
    monkeypatch.setattr(loss, "LOSS_ELEMENTS_PER_CHUNK", 2 * 2 * 64 * 80)
    inputs = batch([(64, 80), (64, 80)])
    spatial = count_calls(model.decoder.stages[2].spatial)
    try:
        reference = losses_and_gradients(model, inputs, False)
        assert len(spatial) == 5  # 2 images x 5 classes, in chunks of 2 maps
        checkpointed = losses_and_gradients(model, inputs, True)
        # 2 + 2 + 1 maps per image (a chunk there also fuses the image's encoder guidance),
        # each chunk again in the backward pass.
        assert len(spatial) == 5 + 2 * 6
    finally:
        del model.decoder.stages[2].spatial.forward
    assert_same(reference, checkpointed)


@pytest.mark.slow
def test_same_losses_and_gradients_on_the_fixture_checkpoint():
    """The released-format checkpoint, 3 classes: decoder chunks of 2 maps, the loss in one
    chunk, as by default at this size. (Split into 2 + 1 classes, PyTorch's CPU bilinear kernel
    rounds the 3-class up-sampling differently from the chunks'; the logits' gradients then
    differ by about 1e-7 relative, and the class-attention q/k gradients by up to 1e-4 of
    their largest entry, where float32 itself is 2e-3 off float64 on this checkpoint.)"""
    model = build_sed_fixture("[2,2]", "MODEL.SEM_SEG_HEAD.CLASS_CHUNK_SIZE", "2").train()
    cases = torch.load(SED_FIXTURE / "cases.pt", weights_only=True)["train"]
    inputs = [{"image": i, "sem_seg": t} for i, t in zip(cases["images"], cases["targets"])]
    reference = losses_and_gradients(model, inputs, False)
    checkpointed = losses_and_gradients(model, inputs, True)
    assert_same(reference, checkpointed)
    for name, expected in cases["losses"].items():
        assert checkpointed[0][name] == pytest.approx(expected, rel=1e-5), name


@pytest.mark.parametrize("dtype, scale, rel", [(torch.float32, 1.0, 1e-6), (torch.float16, 2.0**16, 2e-3)])
def test_chunked_loss_equals_the_plain_loss(monkeypatch, dtype, scale, rel):
    """Several chunks of classes (3 + 3 + 2), a final and a coarser auxiliary output; in float16
    with a gradient scaler's factor the gradient does not underflow."""
    monkeypatch.setattr(loss, "LOSS_ELEMENTS_PER_CHUNK", 3 * 2 * 48 * 40)
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(2, 8, h, w, generator=g) for h, w in [(12, 10), (3, 5)]]
    labels = torch.randint(0, 8, (2, 48, 40), generator=g)
    labels[:, :5] = 255

    def run(losses, inputs):
        inputs = [x.clone().requires_grad_() for x in inputs]
        values = losses(inputs, labels, 255)
        (sum(values.values()) * scale).backward()
        return [v.item() for v in values.values()], [x.grad.float() / scale for x in inputs]

    ref_values, ref_grads = run(loss.sem_seg_losses, logits)
    values, grads = run(loss.chunked_sem_seg_losses, [x.to(dtype) for x in logits])
    assert values == pytest.approx(ref_values, rel=1e-6 if dtype == torch.float32 else 1e-3)
    for grad, ref in zip(grads, ref_grads):
        assert (grad != 0).float().mean() > 0.9
        assert torch.allclose(grad, ref, rtol=rel, atol=rel * float(ref.abs().max()))


def test_bfloat16_autocast_keeps_the_gradients(model):
    """Under bfloat16 autocast the gradients with the saving are as close to the float32 ones
    as without it (relative L2 error over all parameters), and the losses agree."""
    inputs = batch([(64, 64), (64, 64)])
    _, exact = losses_and_gradients(model, inputs, False)
    plain_losses, plain = losses_and_gradients(model, inputs, False, torch.bfloat16)
    losses, checkpointed = losses_and_gradients(model, inputs, True, torch.bfloat16)
    for name, value in plain_losses.items():
        assert losses[name] == pytest.approx(value, rel=1e-3), name

    def error(grads):
        assert grads.keys() == exact.keys() and all(torch.isfinite(g).all() for g in grads.values())
        return (sum(float((grads[n] - g).norm() ** 2) for n, g in exact.items())
                / sum(float(g.norm() ** 2) for g in exact.values())) ** 0.5

    assert error(plain) < 0.02
    assert error(checkpointed) <= 2 * error(plain)


def test_accumulated_micro_batches_equal_the_full_batch_without_saving(model):
    """Two micro-batches of 2 images with the saving give the gradients of one batch of 4
    without it (the training loop's accumulation)."""
    data = batch([(64, 64)] * 4, seed=1)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)

    def gradients(trainer):
        trainer.iter = 0
        with EventStorage(0) as trainer.storage:
            trainer.run_step()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.decoder.checkpoint_chunks = False
    full = gradients(SimpleTrainer(model, iter([data]), optimizer))
    model.decoder.checkpoint_chunks = True
    accumulated = gradients(AccumulatingTrainer(model, iter([data[:2], data[2:]]), optimizer,
                                                accumulation_steps=2, device_type="cpu"))
    assert full.keys() == accumulated.keys() and len(full) > 100
    for name in full:
        assert torch.allclose(full[name], accumulated[name], atol=1e-6, rtol=1e-4), name


def test_recomputation_runs_under_the_autocast_of_the_forward_pass():
    linear = torch.nn.Linear(4, 3)
    seen = []

    def function(x):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return linear(x)

    x = torch.randn(6, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = map_chunks(function, [x], [2, 4], recompute=True, modules=[linear])
        expected = linear(x)
    assert seen == [torch.bfloat16] * 2 and torch.equal(y, expected)
    y.float().sum().backward()
    assert seen == [torch.bfloat16] * 4  # each chunk again, in the backward pass
    grads = [x.grad, linear.weight.grad, linear.bias.grad]
    x.grad = linear.weight.grad = linear.bias.grad = None
    expected.float().sum().backward()
    for a, b in zip(grads, [x.grad, linear.weight.grad, linear.bias.grad]):
        assert torch.allclose(a, b, rtol=1e-2, atol=1e-2)


@pytest.mark.slow
def test_killed_run_resumes_with_the_saving_on(tmp_path, env_with_datasets):
    """run.sh with the saving and 2 micro-batches per iteration, killed after its first
    checkpoint, then the same command again: it resumes there and finishes."""
    out = tmp_path / "out"
    args = ["sh", "run.sh", "configs/synthetic_tiny.yaml", "0", str(out), *FAST, "SOLVER.MAX_ITER", "30",
            "SOLVER.CHECKPOINT_PERIOD", "3", "TEST.EVAL_PERIOD", "0", "SOLVER.IMS_PER_BATCH", "2",
            "SOLVER.GRAD_ACCUM_STEPS", "2", "MODEL.SEM_SEG_HEAD.TRAIN_CHECKPOINT_CHUNKS", "True"]
    start = kill_after_first_checkpoint(args, out, env_with_datasets)
    assert "TRAIN_CHECKPOINT_CHUNKS: true" in (out / "config.yaml").read_text()
    result = subprocess.run(args, cwd=ROOT, env=env_with_datasets, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Starting training from iteration {start}" in result.stdout + result.stderr
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert 0 < start < 30 and final["iteration"] == 29
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
