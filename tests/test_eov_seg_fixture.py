"""The released-format EOV-Seg checkpoint of ../shared reproduces the reference implementation
(tolerances of shared/fixtures/eov_seg_tiny/README.md)."""
import logging

import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import ImageList

from helpers import (EOV_FIXTURE, EOV_FIXTURE_MODES, assert_panoptic_equal, build_eov_fixture, eov_fixture_cfg,
                     eov_training_inputs, image_input, require_eov_fixture)


@pytest.fixture(scope="module")
def cases():
    require_eov_fixture()
    return torch.load(EOV_FIXTURE / "cases.pt", weights_only=True)


@pytest.fixture(scope="module")
def models():
    require_eov_fixture()
    return {mode: build_eov_fixture(mode) for mode in EOV_FIXTURE_MODES}


def test_checkpoint_loads_every_released_key(caplog):
    with caplog.at_level(logging.INFO):
        model = build_eov_fixture()
    for complaint in ("not found in the checkpoint", "not used by the model", "incompatible shapes"):
        assert complaint not in caplog.text
    released = torch.load(EOV_FIXTURE / "model_final.pth", weights_only=True)["model"]
    held = model.state_dict()
    # Every released key is loaded, except the ViT CLIP parts the computation never uses.
    dropped = sorted(set(released) - set(held))
    assert all(k.startswith("vit_backbone.clip_model.") for k in dropped)
    assert not any(k.startswith(("vit_backbone.clip_model.visual.transformer.resblocks.0.",
                                 "vit_backbone.clip_model.visual.conv1.")) for k in dropped)
    assert "vit_backbone.clip_model.visual.transformer.resblocks.1.ln_1.weight" in dropped
    assert set(held) <= set(released)
    for key in held:
        assert torch.equal(held[key], released[key]), key


def test_wrong_checkpoint_names_its_keys(tmp_path):
    require_eov_fixture()
    state = torch.load(EOV_FIXTURE / "model_final.pth", weights_only=True)
    del state["model"]["lite_aggr.loc_conv.bias"]
    state["model"]["light_weight_decoder.mask_heads.0.extra.weight"] = torch.zeros(3)
    state["model"]["void_embedding.weight"] = torch.zeros(1, 7)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    model = build_model(eov_fixture_cfg())
    with pytest.raises(RuntimeError) as error:
        DetectionCheckpointer(model).load(str(path))
    for key in ("lite_aggr.loc_conv.bias", "light_weight_decoder.mask_heads.0.extra.weight", "void_embedding.weight"):
        assert key in str(error.value)


@pytest.mark.slow
@torch.no_grad()
def test_debug_tensors(cases, models):
    model, debug = models["panoptic"], cases["debug"]
    test_cls = model.text_classifier(model.test_vocabulary)
    train_cls = model.text_classifier(model.train_vocabulary)
    assert torch.allclose(test_cls.weight[:-1], debug["text_classifier_test"], atol=1e-4)
    assert torch.allclose(train_cls.weight[:-1], debug["text_classifier_train"], atol=1e-4)
    assert [len(n) for n in model.names_per_class(model.test_vocabulary)] == list(debug["num_names_test"])
    assert [len(n) for n in model.names_per_class(model.train_vocabulary)] == list(debug["num_names_train"])
    assert torch.equal(model.seen_classes().long(), debug["category_overlapping_mask"])

    image = ImageList.from_tensors(model.normalize([image_input(cases["eval"][0]["image"])]), 32).tensor
    features = model.cnn_backbone(image)
    for name, expected in debug["cnn_features"].items():
        assert torch.allclose(features[name], expected, atol=1e-4), name
    vit = model.vit_backbone(image)
    assert torch.allclose(vit, debug["vit_features"], atol=1e-4)
    assert torch.allclose(model.light_weight_decoder.output_upscaling(vit), debug["vit_features_upscaled"], atol=1e-4)
    neck = model.lite_aggr(features)
    assert torch.allclose(neck, debug["neck"], atol=1e-4)
    assert torch.allclose(model.light_weight_decoder.vas(neck, test_cls.weight), debug["vas"], atol=1e-4)
    class_logits, mask_logits = model.light_weight_decoder(neck, vit, test_cls)
    for out, expected in zip(class_logits, debug["stage_cls_logits"]):
        assert torch.allclose(out, expected, atol=1e-4)
    for out, expected in zip(mask_logits, debug["stage_mask_logits"]):
        assert torch.allclose(out, expected, atol=1e-4)
    dense = features["clip_vis_dense"]
    clip_masks = F.interpolate(mask_logits[-1], size=dense.shape[-2:], mode="bilinear", align_corners=False)
    clip_logits = test_cls.logits(model.cnn_backbone.embed_masks(dense, clip_masks), model.cnn_backbone.logit_scale)
    assert torch.allclose(clip_logits, debug["out_vocab_logits"], atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("mode", list(EOV_FIXTURE_MODES))
def test_outputs_per_image(cases, models, mode):
    for case in cases["eval"]:
        out = models[mode]([image_input(case["image"])])[0]
        expected = case[mode]
        assert torch.allclose(out["sem_seg"], expected["sem_seg"], atol=1e-4)
        if mode == "panoptic":
            assert_panoptic_equal(out, expected)
        else:
            assert set(out) == {"sem_seg"}


@torch.no_grad()
@pytest.mark.parametrize("mode", list(EOV_FIXTURE_MODES))
def test_batched_equals_alone(cases, models, mode):
    """Both images in one call (different canvases) give their single-image outputs."""
    outs = models[mode]([image_input(case["image"]) for case in cases["eval"]])
    for out, case in zip(outs, cases["eval"]):
        assert torch.allclose(out["sem_seg"], case[mode]["sem_seg"], atol=1e-4)
        if mode == "panoptic":
            assert_panoptic_equal(out, case[mode])


def test_training_losses_match_the_seeded_reference(cases):
    model = build_eov_fixture().train()
    train = cases["train"]
    torch.manual_seed(train["seed"])
    losses = model(eov_training_inputs(train))
    assert set(losses) == set(train["losses"])
    for name, expected in train["losses"].items():
        assert losses[name].item() == pytest.approx(expected, rel=1e-4), name


@pytest.mark.slow
def test_gradients_reach_only_trainable_parameters(cases):
    model = build_eov_fixture().train()
    torch.manual_seed(0)
    sum(model(eov_training_inputs(cases["train"])).values()).backward()
    for name, param in model.named_parameters():
        frozen = name.startswith(("cnn_backbone.", "vit_backbone."))
        assert param.requires_grad == (not frozen), name
        if frozen:
            assert param.grad is None, name
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.startswith(("lite_aggr.", "light_weight_decoder.", "void_embedding")) for n in trainable)
    for prefix in ("lite_aggr.deconv.deform_conv1.dcn.weight", "light_weight_decoder.object_kernels.weight",
                   "light_weight_decoder.mask_heads.2.logit_scale", "void_embedding.weight",
                   "light_weight_decoder.vas.guide_fc.weight", "light_weight_decoder.output_upscaling.0.weight"):
        grad = dict(model.named_parameters())[prefix].grad
        assert grad is not None and grad.abs().sum() > 0, prefix
