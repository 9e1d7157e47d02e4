"""The installed stack imports and its compiled ops run."""
import torch


def test_stack_imports_and_nms_runs():
    import detectron2  # noqa: F401
    import open_clip  # noqa: F401
    import cityscapesscripts.preparation.createPanopticImgs  # noqa: F401
    import panopticapi.evaluation  # noqa: F401
    import torchvision

    import sed  # noqa: F401

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]
