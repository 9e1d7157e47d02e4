"""Model behaviour that needs no released weights: sizes, batching, vocabulary swaps,
gradient flow, checkpoint errors."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from helpers import ROOT, make_cfg, tiny_model
from sed.modeling.sed import class_aggregation
from sed.modeling.sed.class_aggregation import LinearAttention
from sed.modeling.sed.decoder_stage import DecoderStage
from sed.resources import vocabulary_path


@pytest.mark.parametrize("config, expected", [
    ("convnextB_768.yaml", 180_761_741),
    ("convnextL_768.yaml", 353_245_773),
])
def test_released_parameter_counts(config, expected):
    cfg = make_cfg("MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "", config_file=ROOT / "configs" / config)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == expected


@torch.no_grad()
@pytest.mark.parametrize("fast", [False, True])
def test_batched_inference_matches_single_images(fast):
    model = tiny_model("TEST.FAST_INFERENCE", str(fast), "TEST.TOPK", "2",
                       "MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1,1]")
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in [(200, 256), (256, 196), (230, 230)]]
    inputs = [{"image": im, "height": im.shape[1] // 2 * 2, "width": im.shape[2]} for im in images]
    batched = model(inputs)
    for inp, out in zip(inputs, batched):
        alone = model([inp])[0]["sem_seg"]
        assert out["sem_seg"].shape == (20, inp["height"], inp["width"])
        assert torch.allclose(out["sem_seg"], alone, atol=1e-5)
    if fast:
        assert any((o["sem_seg"].flatten(1).sum(1) == 0).any() for o in batched)


@torch.no_grad()
def test_vocabulary_swap_without_rebuilding():
    model = tiny_model()
    image = {"image": torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)}
    assert model([image])[0]["sem_seg"].shape[0] == 20
    model.test_class_names = ["cat", "dog, puppy", "sky"]
    out = model([image])[0]["sem_seg"]
    assert out.shape == (3, 64, 80)
    assert torch.allclose(model.text_embeddings(["sky"])[0], model.text_embeddings(model.test_class_names)[2], atol=1e-6)


def test_gradients_reach_image_tower_only_through_the_cost_map():
    model = tiny_model("MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON", str(vocabulary_path("synthetic.json"))).train()
    batch = [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8),
              "sem_seg": torch.randint(0, 5, (64, 64))} for _ in range(2)]
    losses = model(batch)
    assert sorted(losses) == [f"loss_sem_seg_{i}" for i in range(4)]
    sum(losses.values()).backward()
    clip = model.encoder.clip
    assert all(p.grad is None for n, p in clip.named_parameters() if not n.startswith("visual."))
    assert not clip.logit_scale.requires_grad
    # res2..res4 guidance is detached: the early stages get gradient only via res5 -> cost map.
    stage0 = clip.visual.trunk.stages[0].blocks[0].conv_dw.weight
    assert stage0.grad is not None and stage0.grad.abs().sum() > 0
    model.zero_grad()
    model.cost_map.cost_volume = lambda img, text: torch.einsum("bchw,tpc->btphw", img.detach(), text)
    sum(model(batch).values()).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in clip.visual.parameters())


def test_wrong_checkpoint_names_the_mismatched_keys(tmp_path):
    model = tiny_model()
    state = {"model": {k: v for k, v in model.state_dict().items()}}
    del state["model"]["decoder.head.weight"]
    state["model"]["sem_seg_head.predictor.transformer.head.weight"] = torch.zeros(1, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="decoder.head.weight"):
        DetectionCheckpointer(tiny_model()).load(str(path))


@pytest.mark.parametrize("fast", [False, True])
def test_class_chunks_do_not_change_outputs(fast, monkeypatch):
    model = tiny_model("TEST.FAST_INFERENCE", str(fast), "TEST.TOPK", "3", "MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1,1]")
    inputs = [{"image": torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8)} for _ in range(2)]
    with torch.no_grad():
        model.decoder.chunk_size = 1000
        monkeypatch.setitem(class_aggregation.TOKENS_PER_CHUNK, "cpu", 1 << 30)
        whole = model(inputs)
        model.decoder.chunk_size = 3  # 20 classes x 2 images in chunks of 3 maps
        monkeypatch.setitem(class_aggregation.TOKENS_PER_CHUNK, "cpu", 1000)  # a few pixels at a time
        chunked = model(inputs)
    for a, b in zip(whole, chunked):
        assert torch.allclose(a["sem_seg"], b["sem_seg"], atol=1e-6)
    model.train()
    batch = [{"image": x["image"], "sem_seg": torch.randint(0, 5, (70, 90))} for x in inputs]
    model.decoder.chunk_size = 1000
    losses = model(batch)
    model.decoder.chunk_size = 3
    for name, value in model(batch).items():
        assert value.item() == pytest.approx(losses[name].item(), rel=1e-6)


def test_linear_attention_matches_its_per_head_formula():
    """out_l = phi(q_l) (sum_s phi(k_s) v_s^T) / (phi(q_l) . sum_s phi(k_s) + eps), head by head."""
    torch.manual_seed(0)
    attention = LinearAttention(16, num_heads=4)
    x = torch.randn(3, 7, 16)
    q, k, v = F.elu(attention.q(x)) + 1, F.elu(attention.k(x)) + 1, attention.v(x)
    expected = torch.empty_like(x)
    for head in range(4):
        h = slice(4 * head, 4 * head + 4)
        numerator = q[..., h] @ (k[..., h].transpose(1, 2) @ v[..., h])
        expected[..., h] = numerator / (q[..., h] @ k[..., h].sum(1).unsqueeze(-1) + 1e-6)
    assert torch.allclose(attention(x), expected, atol=1e-5)


def test_fusion_by_parts_equals_the_concatenated_convolution():
    """The fusion's first convolution, summed over its inputs' parts (the encoder part once per
    image), equals it on the concatenation [up(x), encoder guidance, cost guidance]."""
    torch.manual_seed(0)
    stage = DecoderStage(in_dim=32, out_dim=16, guidance_dim=8, kernel_size=9, num_heads=4, pooling_size=[1, 1])
    x, encoder, cost = torch.randn(5, 32, 6, 6), torch.randn(1, 8, 12, 12), torch.randn(5, 8, 12, 12)
    whole = stage.fuse(torch.cat([stage.up(x), encoder.expand(5, -1, -1, -1), cost], dim=1))
    assert torch.allclose(stage.upsample_fuse(x, stage.encoder_term(encoder), cost), whole, atol=1e-5)
