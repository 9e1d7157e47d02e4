"""Export any model family to ONNX with an open vocabulary (``tools/export.py``), checked with
onnxruntime.

The image side is exported with the vocabulary's text embeddings as graph inputs, so one file
serves any vocabulary (any number of classes T at run time); the text tower is exported on its
own, so a vocabulary can be embedded outside PyTorch too. Each model family describes its graph
(``ModelFamily.export``, :class:`sed.family.ExportSpec`; SED's in
:mod:`sed.modeling.sed.export`, EOV-Seg's in :mod:`sed.modeling.eov_seg.export`). The text
tower: ``tokens`` (N, L) int64, L up to the context length -> ``embeddings`` (N, C)
L2-normalised.

Each file's metadata (``metadata_props``, key ``sed``: JSON) holds what the pre- and
post-processing need (:mod:`sed.deploy`). Whatever blocks an export stops with an
:class:`ExportError` naming the operator and the module.
"""
import json
import re
import traceback
from pathlib import Path
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from .clip.text import encode_tokens
from .deploy import METADATA_KEY, onnxruntime_session
from .family import ExportSpec, ModelFamily, get_family

METADATA_FORMAT = 1
TORCH_ROOT = Path(torch.__file__).resolve().parent


class ExportError(RuntimeError):
    """What blocks an export: the operator, the module, and why."""


class TextTowerGraph(nn.Module):
    """A CLIP text tower: (N, L) token ids -> (N, C) L2-normalised embeddings."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.clip = clip_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(encode_tokens(self.clip, tokens), dim=-1)


def export_spec(cfg) -> ExportSpec:
    """The export description of ``cfg``'s model family; a family without one stops."""
    family = get_family(cfg)
    if family.export is None:
        raise ExportError(f"{family.title} has no ONNX export")
    return family.export


class ModuleStack:
    """The modules running now (outermost first), by name, while tracing ``root``: where an
    error occurs, the last one is the module that holds the operation that failed."""

    def __init__(self, root: nn.Module, prefix: str = "model."):
        self.root, self.prefix, self.running, self.handles = root, prefix, [], []

    def __enter__(self) -> "ModuleStack":
        def enter(name: str, module: nn.Module) -> None:
            self.running.append((name, module))

        def leave(*args) -> None:
            self.running.pop()

        for name, module in self.root.named_modules():
            name = name[len(self.prefix):] if name.startswith(self.prefix) else name
            self.handles.append(module.register_forward_pre_hook(lambda m, args, n=name: enter(n, m)))
            self.handles.append(module.register_forward_hook(leave))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def innermost(self) -> str:
        named = [(n, m) for n, m in self.running if n]
        name, module = named[-1] if named else ("(top level)", self.root)
        return f"{name} ({type(module).__name__})"


def _project_frame(error: BaseException) -> str:
    """file:line (function) of the innermost frame of ``error`` outside torch (the code that
    asked for what cannot be traced)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not Path(f.filename).resolve().is_relative_to(TORCH_ROOT)]
    if not frames:
        return ""
    frame = frames[-1]
    path = Path(frame.filename).resolve()
    here = Path.cwd()
    where = path.relative_to(here) if path.is_relative_to(here) else path
    return f"{where}:{frame.lineno} ({frame.name})"


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def trace(graph: nn.Module, inputs: tuple, dynamic_shapes) -> torch.export.ExportedProgram:
    """``torch.export`` of ``graph`` (no gradients); a failure names the module and the line
    that cannot be traced."""
    with torch.no_grad(), ModuleStack(graph) as stack:
        try:
            return torch.export.export(graph, inputs, dynamic_shapes=dynamic_shapes, strict=False)
        except Exception as error:
            raise ExportError(
                f"cannot trace module {stack.innermost()} at {_project_frame(error) or 'an unknown line'}: "
                f"{_first_line(error)} (a data-dependent Python branch or size, or an operation torch.export "
                "does not support)") from error


def _node_modules(program: torch.export.ExportedProgram) -> Dict[str, str]:
    """FX node name -> the innermost module holding it ("name (Class)")."""
    found = {}
    for node in program.graph.nodes:
        stack = list(node.meta.get("nn_module_stack", {}).values())
        if stack:
            path, kind = stack[-1]
            path = re.sub(r"^L\['self'\]\.?|^model\.", "", path) or "(top level)"
            found[node.name] = f"{path} ({kind.rsplit('.', 1)[-1] if isinstance(kind, str) else kind.__name__})"
    return found


def to_onnx(program: torch.export.ExportedProgram, input_names: Sequence[str], output_names: Sequence[str]):
    """The ONNX program of an exported program; an operator without an ONNX translation stops
    with its name and module."""
    import onnxscript.optimizer

    try:
        # Without onnxscript's rewrite rules: its "x + 0 -> x" rule takes any constant within
        # 1e-8 of 0 for 0 and drops the 1e-8 of EOV-Seg's mask averages (0 / 0 then). Constant
        # folding only: it turns the translation's computed constants (a convolution without
        # bias gets zeros cast like its input) into initializers, which onnxruntime needs to fold
        # BatchNorms into convolutions and fuse activations when it loads the graph.
        onnx_program = torch.onnx.export(program, input_names=list(input_names), output_names=list(output_names),
                                         dynamo=True, optimize=False, verbose=False)
        onnxscript.optimizer.fold_constants(onnx_program.model)
        onnxscript.optimizer.remove_unused_nodes(onnx_program.model)
        return onnx_program
    except Exception as error:
        text = str(error)
        node = re.search(r"Error when translating node %(\w+) : .*?target=([\w.:]+)", text)
        if not node:
            raise ExportError(f"the ONNX translation failed: {_first_line(error)}") from error
        module = _node_modules(program).get(node.group(1), "(unknown module)")
        causes = [line.strip() for line in text.splitlines() if line.startswith("<class")]
        raise ExportError(f"operator {node.group(2)} in module {module} has no ONNX translation"
                          + (f" ({causes[0]})" if causes else "")) from error


# onnxruntime's messages for an operator it has no kernel for, or none for these input types.
ORT_REFUSALS = (r"implementation for (?P<op>\w+)\(\d+\) node with name '(?P<node>[^']*)'",
                r"of operator \((?P<op>\w+)\) in node \((?P<node>[^)]*)\)")


def checked_session(path: str):
    """:func:`sed.deploy.onnxruntime_session` of ``path``; an operator onnxruntime cannot run
    stops with its name and the module it comes from."""
    try:
        return onnxruntime_session(path)
    except Exception as error:
        found = next((m for m in (re.search(p, str(error)) for p in ORT_REFUSALS) if m), None)
        if not found:
            raise
        raise ExportError(f"onnxruntime cannot run operator {found['op']} of module "
                          f"{onnx_node_module(path, found['node'])}: {_first_line(error)}") from error


def onnx_node_module(path: str, node_name: str) -> str:
    """The PyTorch module an ONNX node of ``path`` was exported from (its name scope)."""
    import onnx

    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.name == node_name:
            props = {p.key: p.value for p in node.metadata_props}
            scopes = [s for s in re.findall(r"'([^']*)'", props.get("pkg.torch.onnx.name_scopes", "")) if s]
            return re.sub(r"^model\.", "", scopes[-2]) if len(scopes) > 1 else "(top level)"
    return f"(node {node_name})"


def save(onnx_program, path: str, metadata: dict) -> None:
    """Write the ONNX program with ``metadata`` (JSON) under :data:`METADATA_KEY`."""
    import onnx

    model = onnx_program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps({"format": METADATA_FORMAT, **metadata})
    onnx.save_model(model, str(path), save_as_external_data=model.ByteSize() > 2**31 - 2**20)


def text_metadata(model: nn.Module, family: ModelFamily) -> dict:
    """How the vocabulary's prompts are made, tokenised and combined (``ClassEmbeddingCache``)."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    cache = family.export.text_cache(model)
    if type(cache.tokenizer) is not SimpleTokenizer:
        raise ExportError(f"the text side's tokenizer {type(cache.tokenizer).__name__} is not open_clip's "
                          "SimpleTokenizer, which sed.deploy reproduces")
    text_cfg = (open_clip.get_model_config(cache.model_name) or {}).get("text_cfg", {})
    return {"family": family.name, "clip_model": cache.model_name, "templates": list(cache.templates),
            "prompt_ensemble": cache.ensemble_name, "context_length": cache.tokenizer.context_length,
            "tokenizer_kwargs": text_cfg.get("tokenizer_kwargs", {})}


# Outputs compared as the probabilities they stand for.
AS_PROBABILITIES = {"class_logprobs": torch.exp, "mask_logits": torch.sigmoid}


def compare(session, inputs: Dict[str, torch.Tensor], expected: Sequence[torch.Tensor],
            output_names: Sequence[str]) -> Dict[str, float]:
    """Largest absolute difference of each onnxruntime output from PyTorch's (of the
    probabilities, for log-probabilities and logits: :data:`AS_PROBABILITIES`)."""
    outputs = session.run(list(output_names), {k: v.numpy() for k, v in inputs.items()})
    differences = {}
    for name, out, reference in zip(output_names, outputs, expected):
        convert = AS_PROBABILITIES.get(name, lambda x: x)
        differences[name] = float((convert(torch.from_numpy(out)) - convert(reference)).abs().max())
    return differences


def export_image_side(model: nn.Module, cfg, path: str, *, height: int = 0, width: int = 0,
                      dynamic: bool = False, check: bool = True) -> dict:
    """Export ``model``'s image side (its family's ``ExportSpec``) to ``path``; with ``check``, run it with
    onnxruntime on the example input and return the largest difference from PyTorch per output.

    Args:
        height, width: the example (and, without ``dynamic``, the only) input size; 0: the
            family's default.
        dynamic: any image size at run time (the number of classes is always free).
    """
    spec = export_spec(cfg)
    if model.inference_dtype is not None:
        raise ExportError(f"TEST.PRECISION {cfg.TEST.PRECISION}: autocast does not export (torch.export); "
                          "export float32 (TEST.PRECISION float32)")
    default_h, default_w = spec.default_size
    graph = spec.wrap(model.eval())
    try:
        inputs = spec.example_inputs(model, height or default_h, width or default_w)
    except ValueError as error:  # a size the graph cannot take
        raise ExportError(str(error)) from None
    program = trace(graph, inputs, spec.dynamic_shapes(model, dynamic))
    onnx_program = to_onnx(program, spec.input_names, spec.output_names)
    family = get_family(cfg)
    metadata = {"family": family.name, "inputs": list(spec.input_names), "outputs": list(spec.output_names),
                "dynamic_image_size": dynamic, "example_size": list(inputs[0].shape[-2:]),
                "text": text_metadata(model, family), **spec.metadata(model, cfg)}
    save(onnx_program, path, metadata)
    if not check:
        return {}
    with torch.no_grad():
        expected = graph(*inputs)
    expected = (expected,) if isinstance(expected, torch.Tensor) else expected
    return compare(checked_session(path), dict(zip(spec.input_names, inputs)), expected, spec.output_names)


def export_text_tower(model: nn.Module, cfg, path: str, *, check: bool = True) -> dict:
    """Export the text tower of ``model``'s CLIP (``tokens`` (N, L) -> ``embeddings`` (N, C),
    any N and L up to the context length) to ``path``; ``check`` as :func:`export_image_side`."""
    spec = export_spec(cfg)
    metadata = text_metadata(model, get_family(cfg))
    graph = TextTowerGraph(spec.text_tower(model)).eval()
    tokens = spec.text_cache(model).tokenizer(["a photo of a cat.", "There is a small fire hydrant in the scene."])
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length].contiguous()
    shapes = ({0: Dim("prompts", min=1), 1: Dim("length", min=2, max=metadata["context_length"])},)
    program = trace(graph, (tokens,), shapes)
    save(to_onnx(program, ("tokens",), ("embeddings",)), path, {"inputs": ["tokens"], "outputs": ["embeddings"],
                                                                "text": metadata})
    if not check:
        return {}
    with torch.no_grad():
        expected = graph(tokens)
    return compare(checked_session(path), {"tokens": tokens}, [expected], ("embeddings",))
