"""The fake-CUDA tier (``-m fake_cuda``): both models' GPU paths checked without a GPU.

Under ``FakeTensorMode`` tensors live on a fake ``cuda`` device and a forward propagates
devices, shapes and dtypes without computing; an operation mixing a CUDA tensor with a CPU one
raises, as on a GPU. :class:`HostSyncs`, a dispatch mode above the fake one, adds what the
fake mode does not give:

- it records every host sync the forward reaches, with the innermost frame of the package:
  reads of a device value (``.item()``, ``bool()``, ``.tolist()``), operations whose output
  size depends on device values (``nonzero``, boolean indexing, ``unique``, ``bincount``),
  copies to the host, and uploads (a blocking copy from pageable host memory synchronises the
  stream too, so an upload in the middle of a forward waits for everything queued before it);
- it stands in for the values a fake tensor does not have: a read gives ``False``, ``1`` or
  ``1.0``, a data-dependent size :data:`STUB_COUNT` (what a real run would compute instead);
- it checks the dtypes where the fake kernels do not and CUDA does (matrix products,
  convolutions, norms, grid sampling, indexed writes, the loss's class weights);
- it runs host tensors made from Python values for real, so that the host's shape arithmetic
  (detectron2's padding, the loss's chunk bounds) computes.

The models are the released-format fixtures of ../shared (with their weights) and SED-B,
EOV-Seg-S and EOV-Seg-L from their configs, built on the meta device (no memory, no
initialisation) and made fake CUDA tensors with ``to_empty``; random class embeddings stand in
for the text tower. The half-precision runs cast the weights (autocast needs a real GPU). The
recorded syncs of every path are compared with the lists below: a new sync in a forward fails
the tier. ``docs/gpu.md`` explains the syncs that stay.
"""
import copy
import functools
import sys
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances
from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException, FakeTensor,
                                           FakeTensorMode, unset_fake_temporarily)
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import sed.modeling.eov_seg.criterion as eov_criterion
import sed.modeling.sed.meta_arch as sed_meta_arch
from helpers import EOV_FIXTURE, ROOT, SED_FIXTURE, build_eov_fixture, build_sed_fixture, eov_cfg, make_cfg
from sed.modeling.sed.cost_map import CostMap
from sed.modeling.sed.loss import ChunkedBCE

pytestmark = pytest.mark.fake_cuda

aten = torch.ops.aten
PACKAGE = str(ROOT / "sed") + "/"
# Rows of a data-dependent result (nonzero, boolean index, unique), at most the input's size.
STUB_COUNT = 2
BATCH = 2
# Device operations queued before a sync that make it wait for a network's worth of work (a
# stage of the fixtures' decoders queues over 100; the steps between two syncs of a
# post-processing or of the matching, under 50).
NETWORK_OPS = 75

# Operations whose fake kernels accept mixed dtypes where CUDA raises: argument names that must
# share a dtype.
SAME_DTYPE = {
    aten.mm: ("self", "mat2"), aten.bmm: ("self", "mat2"), aten.addmm: ("self", "mat1", "mat2"),
    aten.baddbmm: ("self", "batch1", "batch2"), aten.convolution: ("input", "weight", "bias"),
    aten.grid_sampler_2d: ("input", "grid"), aten.index_put: ("self", "values"), aten.index_put_: ("self", "values"),
    aten.index_add: ("self", "source"), aten.index_add_: ("self", "source"), aten.scatter_add: ("self", "src"),
    aten.scatter_add_: ("self", "src"), aten.nll_loss_forward: ("self", "weight"),
    aten.nll_loss2d_forward: ("self", "weight"),
}
# Norms: parameters of the input's dtype, or float32 ones with a half-precision input (CUDA's
# mixed-type kernels).
NORMS = {
    aten.native_layer_norm: ("input", "weight", "bias"), aten.native_group_norm: ("input", "weight", "bias"),
    aten._native_batch_norm_legit_no_training: ("input", "weight", "bias", "running_mean", "running_var"),
    aten._native_batch_norm_legit: ("input", "weight", "bias", "running_mean", "running_var"),
}
HALF = (torch.float16, torch.bfloat16)
COMPREHENSIONS = ("<listcomp>", "<genexpr>", "<dictcomp>", "<setcomp>", "<lambda>")


@dataclass(frozen=True)
class Sync:
    """One host sync: ``kind`` ("item", "tolist", "nonzero", "mask-index", "unique", "bincount",
    "to-cpu", "upload"), where (``sed/...py:function``, the line for messages) and the device
    operations queued since the previous sync (what it waits for)."""

    kind: str
    function: str
    line: int
    waits: int

    @property
    def key(self) -> str:
        return f"{self.kind} {self.function}"


def location() -> Tuple[str, int]:
    """("sed/...py:function", line) of the innermost frame of the package in the current stack
    (a comprehension's function for the comprehension), ("?", 0) outside the package."""
    frame = sys._getframe(1)
    while frame is not None and not frame.f_code.co_filename.startswith(PACKAGE):
        frame = frame.f_back
    if frame is None:
        return "?", 0
    line = frame.f_lineno
    while frame.f_code.co_name in COMPREHENSIONS and frame.f_back.f_code.co_filename == frame.f_code.co_filename:
        frame = frame.f_back
    return f"{frame.f_code.co_filename[len(str(ROOT)) + 1:]}:{frame.f_code.co_name}", line


def arguments(func, args, kwargs) -> dict:
    """The operator's arguments by schema name, defaults included."""
    schema = func._schema.arguments
    bound = {a.name: a.default_value for a in schema if a.has_default_value()}
    bound.update(zip((a.name for a in schema), args))
    bound.update(kwargs)
    return bound


def names_cuda(x) -> bool:
    """Whether an operator argument is the CUDA device (a factory's ``device=``)."""
    return isinstance(x, torch.device) and x.type == "cuda" or isinstance(x, str) and x.startswith("cuda")


def is_mask(index) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


class HostSyncs(TorchDispatchMode):
    """Records the host syncs of the operations under it (entered inside a ``FakeTensorMode``),
    stubs data-dependent results and checks dtypes as CUDA does (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.syncs: List[Sync] = []
        self.queued = 0
        self._tolist = None  # the FakeTensor.tolist frame whose element reads are recorded

    def record(self, kind: str) -> None:
        function, line = location()
        self.syncs.append(Sync(kind, function, line, self.queued))
        self.queued = 0

    def keys(self) -> List[str]:
        return [s.key for s in self.syncs]

    def rows(self, mask: torch.Tensor) -> torch.Tensor:
        """Stand-in for ``mask.nonzero()``: (STUB_COUNT, mask.dim()) int64."""
        return mask.new_empty((min(mask.numel(), STUB_COUNT), mask.dim()), dtype=torch.long)

    def check_dtypes(self, func, args, kwargs) -> None:
        packet = func.overloadpacket
        names = SAME_DTYPE.get(packet) or NORMS.get(packet)
        if names is None:
            return
        bound = arguments(func, args, kwargs)
        dtypes = {n: bound[n].dtype for n in names if isinstance(bound.get(n), torch.Tensor)}
        first = dtypes[names[0]]
        allowed = {first, torch.float32} if packet in NORMS and first in HALF else {first}
        if set(dtypes.values()) - allowed:
            raise AssertionError(f"{func} mixes dtypes {dtypes} at {location()}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = tree_leaves((args, kwargs))
        if not any(isinstance(x, FakeTensor) or names_cuda(x) for x in leaves):
            with unset_fake_temporarily():  # host values made from Python values: computed for real
                return func(*args, **kwargs)
        self.check_dtypes(func, args, kwargs)
        stub = self.stub(func, args, kwargs)
        if stub is not None:
            return stub
        self.note_copies(func, args, kwargs)
        if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default) and any(map(is_mask, args[1])):
            self.record("mask-index")
            indices = [i for index in args[1] for i in (self.rows(index).unbind(1) if is_mask(index) else [index])]
            args = (args[0], indices, *args[2:])
        try:
            out = func(*args, **kwargs)
        except (DataDependentOutputException, DynamicOutputShapeException) as error:
            raise AssertionError(f"{func} needs device values at {location()}: give it a stand-in here") from error
        if any(isinstance(x, FakeTensor) and x.device.type == "cuda" for x in tree_leaves(out)):
            self.queued += 1
        return out

    def stub(self, func, args, kwargs):
        """The recorded stand-in of a data-dependent operation, or None for any other."""
        if func is aten._local_scalar_dense.default:
            self.record_read()
            dtype = args[0].dtype
            return False if dtype == torch.bool else 1.0 if dtype.is_floating_point else 1
        if func is aten.nonzero.default:
            self.record("nonzero")
            return self.rows(args[0])
        if func is aten._unique2.default:
            bound = arguments(func, args, kwargs)
            x = bound["self"]
            self.record("unique")
            size = min(x.numel(), STUB_COUNT)
            return (x.new_empty(size), x.new_empty(x.shape if bound["return_inverse"] else 0, dtype=torch.long),
                    x.new_empty(size if bound["return_counts"] else 0, dtype=torch.long))
        if func is aten.bincount.default:
            bound = arguments(func, args, kwargs)
            self.record("bincount")
            return bound["self"].new_empty(max(bound["minlength"], 1), dtype=torch.long)
        return None

    def record_read(self) -> None:
        """A read of a device value; a ``.tolist()`` (which reads each element) counts once."""
        frame, tolist = sys._getframe(), None
        while frame is not None:
            if frame.f_code is FakeTensor.tolist.__code__:
                tolist = frame
            frame = frame.f_back
        if tolist is None:
            self.record("item")
        elif tolist is not self._tolist:
            self._tolist = tolist
            self.record("tolist")

    def note_copies(self, func, args, kwargs) -> None:
        """Records copies between the host and the device (indexing a device tensor with a host
        index copies it too)."""
        if func is aten._to_copy.default and kwargs.get("device") is not None:
            source, target = args[0].device.type, torch.device(kwargs["device"]).type
            if source != target:
                self.record("to-cpu" if target == "cpu" else "upload")
        elif func is aten.copy_.default and args[0].device.type != args[1].device.type:
            self.record("to-cpu" if args[0].device.type == "cpu" else "upload")
        elif func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            if args[0].device.type == "cuda" and any(
                    isinstance(i, torch.Tensor) and i.device.type == "cpu" and i.dim() > 0 for i in args[1]):
                self.record("upload")


class StayOnMeta(TorchFunctionMode):
    """While a model is built on the meta device: moves to another device keep the tensor on
    meta (open_clip moves its models to the CPU), casts still apply."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and args[0].is_meta:
            _, dtype, _, memory_format = torch._C._nn._parse_to(*args[1:], **kwargs)
            return func(args[0], dtype=dtype or args[0].dtype, memory_format=memory_format or torch.preserve_format)
        return func(*args, **kwargs)


def meta_model(cfg) -> torch.nn.Module:
    """The model of ``cfg`` with meta tensors: its structure without memory or initialisation."""
    with torch.device("meta"), StayOnMeta():
        return build_model(cfg)


def random_class_embeddings(model, *vocabularies) -> None:
    """Fake CUDA class embeddings of the vocabularies (class names) in the model's cache: the
    text tower never runs."""
    clip = model.encoder.clip if hasattr(model, "encoder") else model.cnn_backbone.clip_model
    cache, width = model.class_embeddings, clip.text_projection.shape[-1]
    for names in vocabularies:
        rows = cache.num_entries(names)
        shape = (rows, len(cache.templates), width) if cache.ensemble_name == "per_template" else (rows, width)
        cache.put(names, torch.randn(*shape, device="cuda"))


def assert_syncs(syncs: HostSyncs, expected: List[str], stalls: List[str] = ()) -> None:
    """The recorded syncs are ``expected``, in order, and those waiting for a network's worth of
    device operations (:data:`NETWORK_OPS`) are ``stalls``."""
    found = "\n".join(f"  {s.key} (line {s.line}, after {s.waits} device ops)" for s in syncs.syncs)
    assert syncs.keys() == expected, f"host syncs of this path changed; found:\n{found}"
    waiting = [s.key for s in syncs.syncs if s.waits >= NETWORK_OPS]
    assert waiting == list(stalls), f"syncs waiting for the network changed; found:\n{found}"


# --- models ---------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# The models whose main paths run in half precision in the quick tier: one of each family, of
# those built from configs (there without ../shared).
QUICK_HALF = ("SED-B", "EOV-Seg-S")

RANDOM_SED = ("MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "", "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", "")
RANDOM_EOV = ("MODEL.OV_HEAD.CLIP_PRETRAINED_WEIGHTS", "", "MODEL.OV_HEAD.CLIP_VIT_PRETRAINED_WEIGHTS", "",
              "MODEL.EOV_SEG.TEXT_CACHE_DIR", "")


@functools.lru_cache(maxsize=None)
def prototype(name: str) -> torch.nn.Module:
    """The model ``name`` once per session: the released-format fixtures with their weights on
    the CPU, the others on the meta device."""
    if name == "sed-fixture":
        if not (SED_FIXTURE / "model_final.pth").is_file():
            pytest.skip(f"../shared is absent ({SED_FIXTURE} not found): released-format SED fixture unavailable")
        return build_sed_fixture("[1,1]")
    if name == "eov-fixture":
        if not (EOV_FIXTURE / "model_final.pth").is_file():
            pytest.skip(f"../shared is absent ({EOV_FIXTURE} not found): released-format EOV-Seg fixture unavailable")
        return build_eov_fixture("panoptic")
    if name == "SED-B":
        return meta_model(make_cfg(*RANDOM_SED, config_file=ROOT / "configs" / "convnextB_768.yaml"))
    config = {"EOV-Seg-S": "eov_seg_R50.yaml", "EOV-Seg-L": "eov_seg_convnext_l.yaml"}[name]
    return meta_model(eov_cfg(*RANDOM_EOV, config_file=ROOT / "configs" / "eov_seg" / config))


@functools.lru_cache(maxsize=None)
def fake_model(name: str, dtype: torch.dtype) -> Tuple[FakeTensorMode, torch.nn.Module]:
    """A fake mode and, made in it, a copy of :func:`prototype` on the fake CUDA device with its
    weights cast to ``dtype`` and random class embeddings of its vocabularies. Shared by the
    tests (enter the mode to use the model; set the switches a test depends on)."""
    model = copy.deepcopy(prototype(name)).to(dtype)  # outside the fake mode: real weights stay real
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        model = model.to_empty(device="cuda") if next(model.parameters()).is_meta else model.to("cuda")
        if hasattr(model, "train_class_names"):
            random_class_embeddings(model, model.train_class_names, model.test_class_names)
        else:
            random_class_embeddings(model, model.train_vocabulary.names, model.test_vocabulary.names)
    return mode, model


def runs(models, paths, main=None) -> list:
    """(model, path, dtype) parameters: every run in float32; in half precision the ``main``
    path of the :data:`QUICK_HALF` models, the other half-precision runs (other weights or
    switches around the same code) ``slow``."""
    return [pytest.param(name, path, dtype, id=f"{name}-{path}-{dtype}",
                         marks=[] if dtype == torch.float32 or (name in QUICK_HALF and path == main)
                         else [pytest.mark.slow])
            for name in models for path in paths for dtype in DTYPES]


def image(height: int, width: int) -> dict:
    """A host input: (3, height, width) uint8 RGB, output at its own size."""
    return {"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8), "height": height, "width": width}


# --- SED ------------------------------------------------------------------------------------

SED_MODELS = ["sed-fixture", "SED-B"]
NORMALIZE = ["upload sed/modeling/base.py:normalize"] * BATCH
# The kept classes of each image before each of the 3 stages: each waits for the stage before.
REJECTION = ["unique sed/modeling/sed/early_rejection.py:select_top_classes"] * 3 * BATCH
SED_INFERENCE = {"plain": NORMALIZE, "early-rejection": NORMALIZE + REJECTION}
SED_STALLS = {"plain": [], "early-rejection": REJECTION}
# The labels, then the images: before the network.
SED_TRAINING = ["upload sed/modeling/sed/meta_arch.py:forward_with_text"] + NORMALIZE


@pytest.mark.parametrize("name, path, dtype", runs(SED_MODELS, SED_INFERENCE, "plain"))
def test_sed_inference(name, path, dtype):
    """Two images of different sizes in one call (each resized to the CLIP input on its own)."""
    inputs = [image(480, 640), image(512, 384)]
    mode, model = fake_model(name, dtype)
    model.eval().fast_inference = path == "early-rejection"
    with mode, torch.no_grad(), HostSyncs() as syncs:
        outputs = model(inputs)
    for out, x in zip(outputs, inputs):
        assert out["sem_seg"].device.type == "cuda" and out["sem_seg"].dtype == torch.float32
        assert out["sem_seg"].shape == (len(model.test_class_names), x["height"], x["width"])
    assert_syncs(syncs, SED_INFERENCE[path], SED_STALLS[path])


def sed_training_inputs(num_classes: int, side: int = 384) -> List[dict]:
    """Host tensors, as the loader gives them: (3, side, side) uint8 images and train ids."""
    inputs = []
    for _ in range(BATCH):
        labels = torch.randint(0, num_classes, (side, side))
        labels[:8] = 255  # ignored
        inputs.append({"image": torch.randint(0, 256, (3, side, side), dtype=torch.uint8), "sem_seg": labels})
    return inputs


@pytest.mark.parametrize("name, decoder, dtype", runs(SED_MODELS, ["plain", "checkpointed"], "checkpointed"))
def test_sed_training_forward(name, decoder, dtype, monkeypatch):
    """Up to the losses. The checkpointed decoder goes with the chunked loss, which cannot run
    here (:func:`test_sed_chunked_loss_runs_up_to_its_inner_gradient`): the plain loss stands in."""
    monkeypatch.setattr(sed_meta_arch, "chunked_sem_seg_losses", sed_meta_arch.sem_seg_losses)
    mode, model = fake_model(name, dtype)
    checkpoint_chunks = decoder == "checkpointed"
    model.train().decoder.checkpoint_chunks = checkpoint_chunks
    inputs = sed_training_inputs(len(model.train_class_names))
    with mode, HostSyncs() as syncs:
        losses = model(inputs)
    assert model.decoder.recompute == checkpoint_chunks
    assert set(losses) == {f"loss_sem_seg_{i}" for i in range(4)}
    for loss in losses.values():
        assert loss.device.type == "cuda" and loss.dtype == torch.float32 and loss.shape == ()
    assert_syncs(syncs, SED_TRAINING)


def test_sed_checks_the_labels_before_the_upload():
    """A label outside the vocabulary stops the training forward before the labels' upload."""
    mode, model = fake_model("SED-B", torch.float32)
    inputs = sed_training_inputs(len(model.train_class_names))
    inputs[1]["sem_seg"][5, 5] = len(model.train_class_names)
    model.train()
    with mode, HostSyncs() as syncs, pytest.raises(ValueError, match=r"Labels \[171\] are outside the 171-class"):
        model(inputs)
    assert syncs.keys() == []


def test_sed_chunked_loss_runs_up_to_its_inner_gradient():
    """``ChunkedBCE`` computes each chunk's gradient inside its forward (``torch.autograd.grad``),
    and the autograd engine asks for a real CUDA context: on fake tensors the loss runs up to
    there, without syncs or device mixing before."""
    labels = torch.randint(0, 5, (BATCH, 48, 48))
    with FakeTensorMode(allow_non_fake_inputs=True):
        logits = torch.randn(BATCH, 5, 12, 12, device="cuda", requires_grad=True)
        labels = labels.to("cuda")
        with HostSyncs() as syncs, pytest.raises(RuntimeError, match="hasPrimaryContext"):
            ChunkedBCE.apply(logits, labels, 255)
    assert syncs.keys() == []


def test_cost_volume_in_the_image_type():
    """The float32 cached text embeddings follow a half-precision image embedding."""
    image_embedding, text = torch.randn(1, 8, 3, 3), torch.randn(4, 2, 8)
    cost = CostMap.cost_volume(image_embedding.bfloat16(), text)
    assert cost.dtype == torch.bfloat16
    assert torch.allclose(cost.float(), CostMap.cost_volume(image_embedding, text), atol=0.02)


def test_normalize_gives_the_weights_type():
    """Float32 images for float32 weights (as before), the weights' type for cast ones."""
    from sed.modeling.base import OpenVocabularyModel

    model = OpenVocabularyModel(class_embeddings=None, pixel_mean=[10.0, 20.0, 30.0], pixel_std=[2.0, 4.0, 5.0],
                                inference_dtype=None)
    x = image(4, 6)
    mean, std = torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1), torch.tensor([2.0, 4.0, 5.0]).view(3, 1, 1)
    expected = (x["image"].float() - mean) / std
    assert torch.equal(model.normalize([x])[0], expected)
    normalized = model.to(torch.bfloat16).normalize([x])[0]
    assert normalized.dtype == torch.bfloat16
    assert torch.equal(normalized, (x["image"].bfloat16() - mean.bfloat16()) / std.bfloat16())


# --- EOV-Seg --------------------------------------------------------------------------------

EOV_MODELS = ["eov-fixture", "EOV-Seg-S", "EOV-Seg-L"]
CANVAS = (480, 640)  # (H, W) of every run's padded images: the fake mode's dispatch cache serves them all
# (SEMANTIC_ON, PANOPTIC_ON, INSTANCE_ON) of each inference path.
EOV_PATHS = {"semantic": (True, False, False), "instance": (False, False, True), "panoptic": (True, True, True)}
# The class index of the names (text_classifier), the images, the seen classes and, for
# instances, the thing flags: uploaded before the network is queued.
EOV_START = (["upload sed/modeling/eov_seg/text_classifier.py:__init__"] + NORMALIZE
             + ["upload sed/modeling/eov_seg/meta_arch.py:seen_classes"])
ISTHING = ["upload sed/modeling/eov_seg/meta_arch.py:inference"]
# Per image: the kept proposals, the areas each owns, covers and owns and covers (a host loop
# assigns the segments), the proposals' classes, and the segment of each proposal up again.
PANOPTIC = [f"{kind} sed/modeling/eov_seg/inference.py:panoptic_inference" for kind in (
    "nonzero", "bincount", "tolist", "tolist", "mask-index", "bincount", "tolist", "tolist", "upload")]
THINGS = ["nonzero sed/modeling/eov_seg/inference.py:instance_inference"]  # instances of thing classes
EOV_INFERENCE = {
    "semantic": EOV_START,
    "instance": EOV_START + ISTHING,
    "panoptic": EOV_START + ISTHING + (PANOPTIC + THINGS) * BATCH,
}
# The panoptic post-processing's first read waits for the network.
EOV_STALLS = {"semantic": [], "instance": [], "panoptic": PANOPTIC[:1]}
STAGES = 3
# Per stage: the cost matrix of each image to the host (scipy's Hungarian matching), the
# matched pairs up (batch and proposal indices, target indices of each image for the classes
# and for the masks).
MATCHING = (["to-cpu sed/modeling/eov_seg/criterion.py:match"] * BATCH
            + ["upload sed/modeling/eov_seg/criterion.py:stage_losses"] * (2 + 2 * BATCH))
EOV_TRAINING = (NORMALIZE + ["upload sed/modeling/eov_seg/meta_arch.py:losses"] * 2 * BATCH  # classes, masks
                + ["upload sed/modeling/eov_seg/text_classifier.py:__init__"] + MATCHING * STAGES)


# Half precision: in the panoptic path's runs.
@pytest.mark.parametrize("name, path, dtype", runs(EOV_MODELS, ["head_outputs"]))
def test_eov_head_outputs(name, path, dtype):
    """The network (``head_outputs``, what an exported graph computes) reaches no host sync."""
    mode, model = fake_model(name, dtype)
    model.eval()
    with mode:
        classifier, seen = model.text_classifier(model.test_vocabulary), model.seen_classes()
        images = torch.randn(BATCH, 3, *CANVAS, device="cuda", dtype=dtype)
        with torch.no_grad(), HostSyncs() as syncs:
            final, masks = model.head_outputs(images, classifier, seen)
    proposals, num_classes = model.light_weight_decoder.object_kernels.num_embeddings, len(model.test_vocabulary)
    assert final.shape == (BATCH, proposals, num_classes + 1) and masks.shape == (BATCH, proposals, *CANVAS)
    for x in (final, masks):
        assert x.device.type == "cuda" and x.dtype == torch.float32
    assert syncs.keys() == []


@pytest.mark.parametrize("name, path, dtype", runs(EOV_MODELS, EOV_PATHS, "panoptic"))
def test_eov_inference(name, path, dtype):
    """Both images share one padded canvas: the network runs on them as a batch."""
    inputs = [image(*CANVAS), image(CANVAS[0] - 10, CANVAS[1] - 10)]
    mode, model = fake_model(name, dtype)
    model.eval()
    model.semantic_on, model.panoptic_on, model.instance_on = EOV_PATHS[path]
    with mode, torch.no_grad(), HostSyncs() as syncs:
        outputs = model(inputs)
    num_classes = len(model.test_vocabulary)
    for out, x in zip(outputs, inputs):
        size = (x["height"], x["width"])
        if model.semantic_on:
            assert out["sem_seg"].shape == (num_classes, *size)
            assert out["sem_seg"].device.type == "cuda" and out["sem_seg"].dtype == torch.float32
        if model.panoptic_on:
            ids, _ = out["panoptic_seg"]
            assert ids.shape == size and ids.device.type == "cuda" and ids.dtype == torch.int32
        if model.instance_on:
            instances = out["instances"]
            assert instances.image_size == size and instances.pred_masks.shape[1:] == size
            for field in (instances.pred_masks, instances.scores, instances.pred_classes):
                assert field.device.type == "cuda"
    assert_syncs(syncs, EOV_INFERENCE[path], EOV_STALLS[path])


def diagonal_assignment(cost) -> tuple:
    """Stand-in for scipy's Hungarian matching, which reads the cost matrix (a fake tensor has
    no values): proposal i to target i."""
    matched = np.arange(min(cost.shape))
    return matched, matched


@pytest.mark.parametrize("name, path, dtype", runs(EOV_MODELS, ["training"], "training"))
def test_eov_training_forward(name, path, dtype, monkeypatch):
    """Up to the losses, through the Hungarian matching (its host side stands in:
    :func:`diagonal_assignment`)."""
    monkeypatch.setattr(eov_criterion, "linear_sum_assignment", diagonal_assignment)
    mode, model = fake_model(name, dtype)
    model.train()
    num_targets = 3
    inputs = []
    for _ in range(BATCH):
        instances = Instances(CANVAS, gt_classes=torch.randint(0, len(model.train_vocabulary), (num_targets,)),
                              gt_masks=torch.rand(num_targets, *CANVAS) > 0.5)
        inputs.append({"image": torch.randint(0, 256, (3, *CANVAS), dtype=torch.uint8), "instances": instances})
    with mode, HostSyncs() as syncs:
        losses = model(inputs)
    stages = len(model.light_weight_decoder.mask_heads)
    assert set(losses) == {f"s{i}_loss_{n}" for i in range(stages) for n in ("ce", "mask", "dice")}
    for loss in losses.values():
        assert loss.device.type == "cuda" and loss.dtype == torch.float32 and loss.shape == ()
    assert_syncs(syncs, EOV_TRAINING, MATCHING[:1] * STAGES)


def test_point_sample_in_float32():
    """Half-precision mask logits are sampled at float32 coordinates, in float32."""
    maps, coords = torch.randn(2, 6, 6), torch.rand(2, 5, 2)
    sampled = eov_criterion.point_sample(maps.bfloat16(), coords)
    assert sampled.dtype == torch.float32
    assert torch.equal(sampled, eov_criterion.point_sample(maps.bfloat16().float(), coords))
