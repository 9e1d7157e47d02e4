"""The fused CPU inference kernels (sed.fused) compute what the released modules compute."""
import pytest
import torch
from timm.layers import LayerNorm, LayerNorm2d
from timm.models.convnext import ConvNeXtStage

from sed.clip import convnext
from sed.fused import fused_kernels_apply
from sed.modeling.eov_seg import vocabulary_selection
from sed.modeling.eov_seg.vocabulary_selection import VocabularyAwareSelection

with torch.no_grad():
    needs_fused = pytest.mark.skipif(not fused_kernels_apply(torch.zeros(1)),
                                     reason="this torch has no oneDNN linear kernels: the fused path never runs")


def stage(act_layer: str, ls_init_value):
    torch.manual_seed(0)
    s = ConvNeXtStage(16, 24, stride=2, depth=2, ls_init_value=ls_init_value, act_layer=act_layer,
                      norm_layer=LayerNorm2d, norm_layer_cl=LayerNorm).eval()
    if ls_init_value is not None:
        for block in s.blocks:
            block.gamma.data.uniform_(0.2, 1.0)
    return s


@needs_fused
@pytest.mark.parametrize("act_layer, ls_init_value", [("gelu", 1e-6), ("gelu_tanh", 1e-6), ("gelu", None)])
def test_convnext_stage_fused_equals_released(monkeypatch, act_layer, ls_init_value):
    s = stage(act_layer, ls_init_value)
    x = torch.randn(2, 16, 20, 28).contiguous(memory_format=torch.channels_last)
    released = s(x).detach()  # gradients on: the released forward
    calls = []
    fused_block = convnext.fused_block
    monkeypatch.setattr(convnext, "fused_block", lambda b, y: calls.append(b) or fused_block(b, y))
    with torch.no_grad():
        fused = convnext.run_stage(s, x)
    assert len(calls) == 2  # both blocks ran fused
    assert fused.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fused, released, rtol=1e-5, atol=1e-5)


def test_convnext_stage_falls_back_outside_float32_inference(monkeypatch):
    s = stage("gelu", 1e-6)
    monkeypatch.setattr(convnext, "fused_block", lambda b, y: pytest.fail("fused kernel used"))
    x = torch.randn(1, 16, 8, 8)
    convnext.run_stage(s, x)  # gradients on (training)
    with torch.no_grad():
        convnext.run_stage(s.double(), x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            convnext.run_stage(s.float(), x)


@needs_fused
def test_vocabulary_selection_fused_equals_training_formula(monkeypatch):
    torch.manual_seed(0)
    vas = VocabularyAwareSelection(hidden_dim=16, embed_dim=32).eval()
    for bn in (vas.embed_conv.depthwise.norm, vas.embed_conv.pointwise.norm):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    neck, classifier = torch.randn(1, 16, 50, 60), torch.randn(9, 32)
    released = vas(neck, classifier).detach()  # gradients on: the whole-map formula
    calls = []
    linear = vocabulary_selection.linear
    monkeypatch.setattr(vocabulary_selection, "linear", lambda *a, **k: calls.append(k) or linear(*a, **k))
    with torch.no_grad():
        fused = vas(neck, classifier)
    assert len(calls) == 4  # 3000 pixels: two bands, two fused products each
    torch.testing.assert_close(fused, released, rtol=1e-5, atol=1e-5)
