"""EOV-Seg without the fixture: the ResNet path, the ensemble, batching, vocabularies, training,
and the release configs' sizes."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances
from open_clip.transformer import QuickGELU

from helpers import ROOT, eov_cfg, eov_tiny_model
from sed.modeling.eov_seg import inference, vocabulary_selection
from sed.modeling.eov_seg.inference import crop_and_resize, geometric_ensemble, instance_inference, panoptic_inference
from sed.modeling.eov_seg.lite_aggregator import sampled_deform_conv
from sed.modeling.eov_seg.vit_clip import residual_block
from sed.modeling.eov_seg.vocabulary_selection import VocabularyAwareSelection

TRAIN = [{"name": "person, man", "isthing": True}, {"name": "car", "isthing": True}, "sky", "grass,lawn"]
TEST = [{"name": "car", "isthing": True}, {"name": "dog", "isthing": True}, "sky", "road, street", "tree"]


@pytest.fixture(scope="module")
def vocabularies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocabularies")
    (folder / "train.json").write_text(json.dumps(TRAIN))
    (folder / "test.json").write_text(json.dumps(TEST))
    return folder / "train.json", folder / "test.json"


@pytest.fixture(scope="module")
def model(vocabularies):
    return eov_tiny_model(*vocabularies, "MODEL.EOV_SEG.TEST.SEMANTIC_ON", "True",
                          "MODEL.EOV_SEG.TEST.INSTANCE_ON", "True", "MODEL.EOV_SEG.TEST.OVERLAP_THRESHOLD", "0.1")


def image(h, w, seed):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_vocabulary_names_things_and_seen_classes(model):
    assert model.train_vocabulary.isthing == (True, True, False, False)
    assert [len(n) for n in model.names_per_class(model.train_vocabulary)] == [2, 1, 1, 2]
    assert model.seen_classes().tolist() == [True, False, True, False, False]
    assert model.text_classifier(model.test_vocabulary).weight.shape == (7, 32)  # 6 names + void


@torch.no_grad()
def test_masked_attention_pool_attends_inside_each_mask(model):
    """The ResNet CLIP branch equals, proposal by proposal, CLIP's attention pool restricted to
    the pixels of the mask (written here with torch's reference multi-head attention)."""
    cnn = model.cnn_backbone
    pool = cnn.clip_model.visual.attnpool
    torch.manual_seed(1)
    dense = torch.randn(2, pool.k_proj.in_features, 3, 4)
    masks = torch.randn(2, 5, 3, 4)
    masks[0, 1] = -1.0  # an empty mask
    out = cnn.embed_masks(dense, masks)
    grid = int((pool.positional_embedding.shape[0] - 1) ** 0.5)
    spatial = pool.positional_embedding[1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    spatial = F.interpolate(spatial, size=(3, 4), mode="bilinear", align_corners=False)[0].flatten(1).t()
    for b in range(2):
        pixels = dense[b].flatten(1).t()
        query = (pixels.mean(0) + pool.positional_embedding[0])[None, None]
        for n in range(5):
            inside = masks[b, n].flatten() > 0
            if not inside.any():
                assert torch.equal(out[b, n], torch.zeros_like(out[b, n]))
                continue
            kv = (pixels + spatial)[inside][:, None]
            expected, _ = F.multi_head_attention_forward(
                query, kv, kv, kv.shape[-1], pool.num_heads, None,
                torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None, False, 0.0,
                pool.c_proj.weight, pool.c_proj.bias, training=False, need_weights=False,
                use_separate_proj_weight=True, q_proj_weight=pool.q_proj.weight,
                k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight)
            assert torch.allclose(out[b, n], expected[0, 0], atol=1e-5)


def test_valid_mask_rule_keeps_the_decoder_prediction():
    torch.manual_seed(0)
    in_logits, out_logits = torch.randn(1, 3, 5), torch.randn(1, 3, 5)
    out_logits[0, 1] = float("nan")  # an empty proposal's CLIP logits are meaningless
    seen = torch.tensor([True, False, True, False])
    valid = torch.tensor([[True, False, True]])
    mixed = geometric_ensemble(in_logits, out_logits, seen, 0.4, 0.8, valid)
    assert torch.isfinite(mixed).all()
    void = in_logits.softmax(-1)[..., -1:]
    decoder_only = torch.cat([in_logits[..., :-1].softmax(-1) * (1 - void), void], -1)
    assert torch.allclose(mixed[0, 1].exp(), decoder_only[0, 1] + 1e-8, atol=1e-6)
    # Valid proposals: seen classes take CLIP's probability to the power alpha, unseen to beta.
    p_in, p_out = in_logits[0, 0, :-1].softmax(-1), out_logits[0, 0, :-1].softmax(-1)
    exponent = torch.tensor([0.4, 0.8, 0.4, 0.8])
    expected = (p_in ** (1 - exponent) * p_out ** exponent)
    expected = expected / expected.sum() * (1 - void[0, 0])
    assert torch.allclose(mixed[0, 0, :-1].exp(), expected + 1e-8, atol=1e-6)


@pytest.mark.slow
@torch.no_grad()
def test_batch_gives_each_image_its_own_output(model):
    """Any batch size: two images that share a padded canvas and one that does not."""
    images = [image(70, 90, 0), image(64, 96, 1), image(100, 40, 2)]
    inputs = [{"image": im, "height": 2 * im.shape[1], "width": im.shape[2]} for im in images]
    batched = model(inputs)
    for inp, out in zip(inputs, batched):
        alone = model([inp])[0]
        assert out["sem_seg"].shape == (5, inp["height"], inp["width"])
        assert torch.allclose(out["sem_seg"], alone["sem_seg"], atol=1e-5)
        assert torch.equal(out["panoptic_seg"][0], alone["panoptic_seg"][0])
        assert out["panoptic_seg"][1] == alone["panoptic_seg"][1]
        assert torch.allclose(out["instances"].scores, alone["instances"].scores, atol=1e-6)
        assert out["instances"].pred_masks.shape[-2:] == (inp["height"], inp["width"])
        # Panoptic mode keeps thing instances only.
        things = torch.tensor(model.test_vocabulary.isthing)
        assert things[out["instances"].pred_classes].all()
    for out in batched:
        ids, info = out["panoptic_seg"]
        assert set(torch.unique(ids).tolist()) - {0} == {s["id"] for s in info}


def test_panoptic_and_instance_post_processing():
    """Crafted proposals: two of one stuff class merge into one segment, a void and a
    low-overlap proposal are dropped, a thing keeps its own id; instances keep things only."""
    big = 10.0
    # classes: 0 sky (stuff), 1 car (thing); column 2 is void.
    logits = torch.tensor([[big, 0, 0], [big, 0, 0], [0, big, 0], [0, 0, big], [0, big, 0]])
    masks = torch.full((5, 4, 6), -big)
    masks[0, :2, :3] = big   # sky, top left
    masks[1, :2, 3:] = big   # sky again, top right: merged with the first
    masks[2, 2:, :2] = big   # a car
    masks[3, 2:, 2:4] = big  # void proposal: dropped
    masks[4, 2:, :3] = big   # a car mostly covered by the first car: overlap 1/3 < 0.8
    isthing = torch.tensor([False, True])
    ids, info = panoptic_inference(logits, masks, isthing, object_mask_threshold=0.0, overlap_threshold=0.8)
    assert info == [{"id": 1, "isthing": False, "category_id": 0}, {"id": 2, "isthing": True, "category_id": 1}]
    assert (ids[:2] == 1).all() and (ids[2:, :2] == 2).all() and (ids[2:, 2:] == 0).all()
    assert ids.dtype == torch.int32
    instances = instance_inference(logits, masks, isthing, max_detections=4, things_only=True)
    assert instances.pred_classes.tolist() == [1, 1]
    assert sorted(instances.pred_masks.sum((1, 2)).tolist()) == [4, 6]
    assert (instances.scores[:-1] >= instances.scores[1:]).all()
    everything = instance_inference(logits, masks, isthing, max_detections=4, things_only=False)
    assert len(everything) == 4 and 0 in everything.pred_classes.tolist()


def test_panoptic_bands_give_the_same_segments_as_one_pass(monkeypatch):
    """Random proposals, ties included, some void or below the threshold: the id map computed a
    few rows at a time equals a direct whole-image computation of the same rule."""
    torch.manual_seed(0)
    logits = torch.randn(12, 5) * 3
    # Smooth blobs, rounded: many ties between proposals.
    masks = (F.interpolate(torch.randn(1, 12, 4, 3), size=(23, 17), mode="bilinear")[0] * 4).round()
    isthing = torch.tensor([True, False, True, False])
    monkeypatch.setattr(inference, "PANOPTIC_ELEMENTS_PER_BAND", 3 * 17 * 12)  # bands of 3 rows
    ids, info = panoptic_inference(logits, masks, isthing, object_mask_threshold=0.3, overlap_threshold=0.3)

    scores, labels = logits.softmax(-1).max(-1)
    keep = (labels != 4) & (scores > 0.3)
    probs = masks[keep].sigmoid()
    owner = (scores[keep, None, None] * probs).argmax(0)
    covered = probs.gather(0, owner[None])[0] >= 0.5
    expected, segment_of_label, next_id = torch.zeros(23, 17, dtype=torch.int32), {}, 1
    for k, label in enumerate(labels[keep].tolist()):
        mine = (owner == k) & covered
        area, original = int((owner == k).sum()), int((probs[k] >= 0.5).sum())
        if area == 0 or original == 0 or not mine.any() or area / original < 0.3:
            continue
        if not isthing[label] and label in segment_of_label:
            expected[mine] = segment_of_label[label]
            continue
        expected[mine] = next_id
        if not isthing[label]:
            segment_of_label[label] = next_id
        next_id += 1
    assert keep.sum() >= 4 and next_id - 1 == len(info) >= 2
    assert torch.equal(ids, expected)


def test_crop_and_resize_is_a_view_at_the_output_size():
    maps = torch.randn(3, 10, 12)
    assert crop_and_resize(maps, (8, 9), 8, 9).data_ptr() == maps.data_ptr()
    resized = crop_and_resize(maps, (8, 9), 16, 18)
    assert torch.allclose(resized, F.interpolate(maps[None, :, :8, :9], size=(16, 18), mode="bilinear")[0])


@pytest.mark.parametrize("channels_last", [False, True])
def test_sampled_deform_conv_equals_torchvision(channels_last):
    """Large offsets (taps far outside the map), taps exactly on the border, either layout."""
    from torchvision.ops import deform_conv2d

    torch.manual_seed(0)
    x, weight = torch.randn(2, 6, 7, 9), torch.randn(5, 6, 3, 3)
    offset, mask = torch.randn(2, 18, 7, 9) * 4, torch.rand(2, 9, 7, 9)
    offset[0, :2, 0, 0] = torch.tensor([-1.0, -2.0])
    offset[1, 2:4, -1, -1] = torch.tensor([1.0, 0.5])
    expected = deform_conv2d(x, offset, weight, None, padding=1, mask=mask)
    if channels_last:
        x, weight = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight))
    assert torch.allclose(sampled_deform_conv(x, offset, weight, mask), expected, atol=1e-5)


def test_vocabulary_selection_in_bands_equals_the_training_computation(monkeypatch):
    """Inference computes each pixel's best response a few pixels at a time with the 1x1
    convolution's BatchNorm folded in; trained (non-trivial) BatchNorm statistics, an odd tail band."""
    torch.manual_seed(0)
    vas = VocabularyAwareSelection(hidden_dim=8, embed_dim=12)
    for bn in (vas.embed_conv.depthwise.norm, vas.embed_conv.pointwise.norm):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        nn.init.normal_(bn.weight)
        nn.init.normal_(bn.bias)
    vas.eval()
    neck, classifier = torch.randn(2, 8, 5, 7), F.normalize(torch.randn(9, 12), dim=-1) * 4
    monkeypatch.setattr(vocabulary_selection, "PIXELS_PER_BAND", 16)  # 70 pixels: 5 bands, the last of 6
    expected = vas(neck, classifier)  # gradients on: the whole-map computation
    assert expected.requires_grad
    with torch.no_grad():
        banded = vas(neck, classifier)
    assert torch.allclose(banded, expected, atol=1e-6)
    assert expected.std() > 0.01  # the best responses differ from pixel to pixel


def test_inference_folds_the_resnet_batchnorms(model):
    """Without gradients the ResNet CLIP's trunk runs with its BatchNorms folded into the
    convolutions: the same features as the released modules (non-trivial statistics), refolded
    after a weight changes; with gradients it runs the released modules; no checkpoint key."""
    cnn = copy.deepcopy(model.cnn_backbone)
    torch.manual_seed(0)
    with torch.no_grad():
        for bn in (m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    keys = set(cnn.state_dict())
    images = torch.randn(1, 3, 64, 96).contiguous(memory_format=torch.channels_last)

    def compare():
        released = cnn(images)  # gradients on: the BatchNorm modules
        with torch.no_grad():
            folded = cnn(images)
        for name, expected in released.items():
            assert torch.allclose(folded[name], expected, rtol=1e-4, atol=1e-4), name
        return folded["res5"]

    before = compare()
    trunk = cnn.folded_trunk()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())
    assert cnn.folded_trunk() is trunk  # kept while the weights do not change
    with torch.no_grad():
        cnn.clip_model.visual.layer4[-1].bn3.running_mean.add_(1.0)
    assert not torch.allclose(compare(), before, atol=1e-3)
    assert cnn.folded_trunk() is not trunk
    assert set(cnn.state_dict()) == keys


@torch.no_grad()
def test_inference_decoder_classifies_the_last_stage_only(model):
    """Without ``all_stages`` the decoder gives the last stage's outputs of the full computation
    and never runs an earlier stage's class embedding (its outputs feed only the training loss)."""
    torch.manual_seed(0)
    decoder = model.light_weight_decoder
    hidden, vit_dim = decoder.object_kernels.weight.shape[1], decoder.output_upscaling[0].in_channels
    neck, vit = torch.randn(1, hidden, 8, 12), torch.randn(1, vit_dim, 2, 3)
    classifier = model.text_classifier(model.test_vocabulary)
    full = decoder(neck, vit, classifier)
    calls = []
    hooks = [stage.class_embed.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
             for k, stage in enumerate(decoder.mask_heads)]
    try:
        last = decoder(neck, vit, classifier, all_stages=False)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(decoder.mask_heads) > 1 and calls == [len(decoder.mask_heads) - 1]
    assert len(last[0]) == len(last[1]) == 1
    assert torch.equal(last[0][0], full[0][-1]) and torch.equal(last[1][0], full[1][-1])


def test_vit_block_with_fused_attention_equals_open_clip(model):
    block = model.vit_backbone.clip_model.visual.transformer.resblocks[0]
    tokens = torch.randn(2, 11, block.attn.embed_dim)
    with torch.no_grad():
        assert torch.allclose(residual_block(block, tokens), block(tokens), atol=1e-5)


def training_batch(num_images=2):
    inputs = []
    for i in range(num_images):
        im = image(64 + 16 * i, 80, i)
        masks = torch.zeros(2 - i, *im.shape[-2:], dtype=torch.bool)  # the second image: one segment
        for j in range(len(masks)):
            masks[j, 10 * j : 30 + 10 * j, 5:50] = True
        inputs.append({"image": im, "instances": Instances(tuple(im.shape[-2:]), gt_classes=torch.arange(len(masks)),
                                                          gt_masks=masks)})
    inputs.append({"image": image(50, 60, 9), "instances": Instances((50, 60), gt_classes=torch.zeros(0, dtype=torch.int64),
                                                                    gt_masks=torch.zeros(0, 50, 60, dtype=torch.bool))})
    return inputs


@pytest.mark.slow
def test_seeded_training_losses_are_reproducible_and_finite(vocabularies):
    model = eov_tiny_model(*vocabularies).train()
    batch = training_batch()
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append({k: v.item() for k, v in model(batch).items()})
    assert runs[0] == runs[1]
    assert set(runs[0]) == {f"s{i}_loss_{n}" for i in range(3) for n in ("ce", "mask", "dice")}
    assert all(torch.isfinite(torch.tensor(v)) and v > 0 for v in runs[0].values())
    torch.manual_seed(6)
    other = {k: v.item() for k, v in model(batch).items()}
    assert other["s0_loss_mask"] != runs[0]["s0_loss_mask"]  # the points are drawn from the seed


def test_num_classes_must_match_the_training_vocabulary(vocabularies):
    with pytest.raises(ValueError, match="NUM_CLASSES is 133 but the training vocabulary"):
        build_model(eov_cfg("MODEL.EOV_SEG.TRAIN_CLASS_JSON", str(vocabularies[0]), "MODEL.WEIGHTS", "x.pth"))


def test_vocabulary_from_dataset_metadata(vocabularies):
    MetadataCatalog.get("eov_test_metadata_only").set(
        stuff_classes=["cat", "wall, walls", "person"], thing_dataset_id_to_contiguous_id={17: 0, 1: 2})
    model = eov_tiny_model(vocabularies[0], "", "DATASETS.TEST", "('eov_test_metadata_only',)")
    assert model.test_vocabulary.names == ("cat", "wall, walls", "person")
    assert model.test_vocabulary.isthing == (True, False, True)


# Parameters of the released configs with random CLIP weights (eov-seg-method.md section 11),
# less the ViT CLIP parts that are dropped on load (layers 1-11, ln_post, proj, text tower:
# 141,789,441 of its 149,620,737).
RELEASED = {
    "eov_seg_convnext_l": {"total": 523_179_210, "trainable": 21_785_864, "cnn_backbone": 351_772_609,
                           "lite_aggr": 8_724_465, "light_weight_decoder": 13_060_631, "void_embedding": 768},
    "eov_seg_R50": {"total": 280_763_466, "trainable": 29_135_592},
    "eov_seg_r50x4": {"total": 364_340_674, "trainable": 36_419_336},
}
VIT_FULL, VIT_KEPT = 149_620_737, 7_831_296


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_release_configs_build_with_the_released_sizes(name):
    """Built offline: with MODEL.WEIGHTS set, no CLIP weights are fetched (the OpenAI tags
    still decide QuickGELU)."""
    cfg = eov_cfg("MODEL.WEIGHTS", "released_checkpoint.pth", config_file=ROOT / "configs" / "eov_seg" / f"{name}.yaml")
    model = build_model(cfg)
    counts = {}
    for param_name, p in model.named_parameters():
        counts[param_name.split(".")[0]] = counts.get(param_name.split(".")[0], 0) + p.numel()
    expected = RELEASED[name]
    assert counts["vit_backbone"] == VIT_KEPT
    assert sum(counts.values()) == expected["total"] - VIT_FULL + VIT_KEPT
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected["trainable"]
    for prefix in ("cnn_backbone", "lite_aggr", "light_weight_decoder", "void_embedding"):
        if prefix in expected:
            assert counts[prefix] == expected[prefix], prefix
    openai = name != "eov_seg_convnext_l"
    text_act = model.cnn_backbone.clip_model.transformer.resblocks[0].mlp.gelu
    vit_act = model.vit_backbone.clip_model.visual.transformer.resblocks[0].mlp.gelu
    assert isinstance(text_act, QuickGELU) == openai
    assert isinstance(vit_act, QuickGELU)  # ViT-B-16 "openai" in all three
    assert len(model.test_vocabulary) == 150 and sum(model.test_vocabulary.isthing) == 100
