"""Bad input stops with a clear message before any work (issue 37, the library side): weights of
the other model family, missing or truncated weights, vocabularies that cannot be what was
meant, images the models cannot read, option values out of range, unknown datasets and config
keys."""
import json

import numpy as np
import pytest
import torch
from detectron2.engine import default_argument_parser
from PIL import Image

from helpers import ROOT, TINY_TEXT
from sed import engine
from sed.checkpoint import CheckpointError
from sed.config import ConfigError, build_config
from sed.data.synthetic import make_sample
from sed.predictor import Predictor, load_config, parse_vocabulary_spec, rgb_image

SED_TINY = str(ROOT / "configs" / "synthetic_tiny.yaml")
EOV_TINY = str(ROOT / "configs" / "eov_seg" / "synthetic_tiny.yaml")
EOV_TEXT = ["MODEL.EOV_SEG.TEXT_CACHE_DIR", ""]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random-init checkpoints of both tiny configs, and a truncated copy of one."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name, config, text in (("sed", SED_TINY, TINY_TEXT), ("eov_seg", EOV_TINY, EOV_TEXT)):
        torch.manual_seed(0)
        model = Predictor(load_config(config, opts=text)).model
        paths[name] = folder / f"{name}.pth"
        torch.save({"model": model.state_dict()}, paths[name])
    paths["truncated"] = folder / "truncated.pth"
    paths["truncated"].write_bytes(paths["sed"].read_bytes()[:4096])
    return paths


@pytest.fixture(scope="module")
def sed_predictor():
    torch.manual_seed(0)
    return Predictor(load_config(SED_TINY, opts=TINY_TEXT))


@pytest.mark.parametrize("config,text,weights,owner", [(SED_TINY, TINY_TEXT, "eov_seg", "EOV-Seg"),
                                                       (EOV_TINY, EOV_TEXT, "sed", "SED")])
def test_weights_of_the_other_family_name_it(checkpoints, config, text, weights, owner):
    with pytest.raises(CheckpointError) as error:
        Predictor(load_config(config, str(checkpoints[weights]), text))
    message = str(error.value)
    assert f"they are {owner} weights: use a {owner} config" in message
    assert len(message.splitlines()) <= 3 and "..." in message  # a summary, not every key


def test_own_weights_load(checkpoints):
    Predictor(load_config(SED_TINY, str(checkpoints["sed"]), TINY_TEXT))


def test_no_weights_with_pretrained_clip_stops_before_building():
    with pytest.raises(CheckpointError, match='MODEL.WEIGHTS is empty: SED would run untrained layers on pretrained'
                                              '.*MODEL.ENC.CLIP_PRETRAINED_WEIGHTS ""'):
        Predictor(load_config(str(ROOT / "configs" / "convnextB_768.yaml")))


def test_no_weights_with_random_clip_is_a_random_model_on_purpose(caplog):
    with caplog.at_level("WARNING", logger="sed.checkpoint"):
        Predictor(load_config(SED_TINY, opts=TINY_TEXT))
    assert "MODEL.WEIGHTS is empty: a randomly initialised SED model" in caplog.text


def test_truncated_or_absent_checkpoint_names_the_file(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match=f"{checkpoints['truncated']} cannot be read as a checkpoint .*truncated"):
        Predictor(load_config(SED_TINY, str(checkpoints["truncated"]), TINY_TEXT))
    with pytest.raises(CheckpointError, match="MODEL.WEIGHTS .*nothing.pth: no such file"):
        Predictor(load_config(SED_TINY, str(tmp_path / "nothing.pth"), TINY_TEXT))


def test_resume_from_a_truncated_last_checkpoint_says_what_to_do(checkpoints, tmp_path):
    (tmp_path / "model_0000009.pth").write_bytes(checkpoints["truncated"].read_bytes())
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    args = default_argument_parser().parse_args(
        ["--config-file", SED_TINY, "--eval-only", "--resume", "OUTPUT_DIR", str(tmp_path), *TINY_TEXT,
         "DATASETS.TEST", "()"])
    with pytest.raises(CheckpointError, match="model_0000009.pth cannot be read.*OUTPUT_DIR/last_checkpoint"):
        engine.main(args)


@pytest.mark.parametrize("spec,error,message", [
    ("no_such_vocab.json", FileNotFoundError, "vocabulary file 'no_such_vocab.json' does not exist"),
    ("some/folder/classes", FileNotFoundError, "does not exist"),
    (";;,", ValueError, "is not a name"),
    (["red circle, :thing", "sky"], ValueError, "has an empty synonym"),
    (["sky, "], ValueError, "has an empty synonym"),
    ("ade15", ValueError, "did you mean ade150"),
])
def test_vocabularies_that_cannot_be_what_was_meant_stop(spec, error, message):
    with pytest.raises(error, match=message):
        parse_vocabulary_spec(spec, "EOV_SEG")


def test_benchmark_names_match_whatever_their_case_and_single_classes_still_work():
    assert len(parse_vocabulary_spec("ADE150", "SED")) == 150
    assert parse_vocabulary_spec("ade15:stuff", "SED").names == ("ade15",)
    assert parse_vocabulary_spec("cat", "SED").names == ("cat",)


def test_a_json_object_file_is_refused(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"names": ["cat", "dog"]}))
    with pytest.raises(ValueError, match="must be a JSON list"):
        parse_vocabulary_spec(str(path), "SED")


IMAGE = make_sample(np.random.default_rng(1), 64)[0]


@pytest.mark.parametrize("image,message", [
    (IMAGE.astype(np.float32) / 255, r"not float32: \(image \* 255\)"),
    (IMAGE.transpose(2, 0, 1), r"channels-first .*transpose\(1, 2, 0\)"),
    (IMAGE[..., 0], "greyscale"),
    (np.concatenate([IMAGE, IMAGE[..., :1]], -1), r"\(RGBA\): image\[\.\.\., :3\]"),
    (IMAGE.astype(np.uint16), "not uint16"),
    (IMAGE.astype(np.int64), "not int64"),
    (IMAGE > 0, "not bool"),
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (torch.from_numpy(IMAGE.transpose(2, 0, 1).copy()), r"permute\(1, 2, 0\)"),
])
def test_images_the_models_cannot_read_are_refused(sed_predictor, image, message):
    with pytest.raises(ValueError, match=message):
        sed_predictor(image, ["red circle", "sky"])


def test_pil_images_and_hwc_tensors_are_converted(sed_predictor):
    expected = sed_predictor(IMAGE, ["red circle", "sky"]).probabilities
    for image in (Image.fromarray(IMAGE), Image.fromarray(IMAGE).convert("RGBA"), torch.from_numpy(IMAGE)):
        assert torch.equal(sed_predictor(image, ["red circle", "sky"]).probabilities, expected)
    assert rgb_image(IMAGE) is IMAGE
    with pytest.raises(TypeError, match="not list"):
        rgb_image(IMAGE.tolist())


def test_option_values_out_of_range_stop(sed_predictor):
    with pytest.raises(ValueError, match="TEST.TOPK is 0; it takes values at least 1"):
        sed_predictor(IMAGE, ["red circle", "sky"], options={"TEST.TOPK": 0})
    with pytest.raises(ValueError, match="TEST.TOPK is 0"):
        Predictor(load_config(SED_TINY, opts=[*TINY_TEXT, "TEST.TOPK", "0"]))
    with pytest.raises(ValueError, match="OVERLAP_THRESHOLD is 1.5; it takes values from 0 to 1"):
        Predictor(load_config(EOV_TINY, opts=[*EOV_TEXT, "MODEL.EOV_SEG.TEST.OVERLAP_THRESHOLD", "1.5"]))


def test_an_unknown_dataset_names_the_close_ones_and_folders():
    args = default_argument_parser().parse_args(["--config-file", SED_TINY, "DATASETS.TEST",
                                                 "('ade20k_150_test_sem_segg',)"])
    with pytest.raises(ValueError, match="'ade20k_150_test_sem_segg' is not a registered dataset; did you mean "
                                         "ade20k_150_test_sem_seg.*named by its path, which holds a '/'"):
        engine.build_cfg(args)


@pytest.mark.parametrize("opts,message", [
    (["TEST.FAST_INFERENCEE", "True"], "TEST.FAST_INFERENCEE is not a config key; did you mean TEST.FAST_INFERENCE?"),
    (["TEST.TOPK", "many"], "TEST.TOPK takes int values \\(default 8\\), not 'many'"),
    (["TEST.TOPK"], "are not KEY VALUE pairs"),
])
def test_config_errors_are_one_line_with_the_closest_key(opts, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_config(SED_TINY, opts)
    assert "\n" not in str(error.value)
