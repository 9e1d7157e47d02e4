"""Compiled inference (``TEST.COMPILE``): the networks that see only the image run through
``torch.compile`` (inductor), compiled once per machine.

Each model family names what is compiled (``ModelFamily.compile``, :class:`sed.family.CompileSpec`):
the networks before the vocabulary meets the image (SED's CLIP image tower; EOV-Seg's CNN CLIP
tower, ViT block and Lite Aggregator), which hold most of an image's computation. They never see
the classes, so one graph serves any vocabulary; the vocabulary-dependent decoders, early
rejection and the post-processing run eagerly. A family whose input size varies from image to
image (EOV-Seg's padded canvases) gets one graph per network with a symbolic height and width; a
fixed input (SED's 768x768 resize) one static graph.

On the CPU inductor freezes the weights into the graph (constant folding, oneDNN weight packing;
not in a module with a transposed convolution, :func:`freezable`): a model's weights are loaded
before it is compiled, and loading others afterwards stops with an error. Calls with gradients,
under ``torch.export`` or TorchScript tracing, or inside :func:`eager` run the modules' own
forward.

Inductor keeps what it compiles (FX graphs, AOTAutograd artefacts, autotuning results) under
``TEST.COMPILE_CACHE_DIR``: the first run of a command compiles (about a minute for a tower on
a 2-core CPU), the next ones skip code generation and C++ compilation by loading from that
folder (tracing and freezing still run: about half the time). While a graph compiles the log says so every
:data:`PROGRESS_EVERY_S` seconds; once done, how long it took and whether the cache served it.
"""
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import nn

logger = logging.getLogger(__name__)

# torch.compile mode by device type, when TEST.COMPILE_MODE is "".
DEFAULT_MODES = {"cuda": "max-autotune-no-cudagraphs"}
PROGRESS_EVERY_S = 15.0
# Inductor's cache counters (torch._dynamo.utils.counters) -> what they count.
CACHE_COUNTERS = {("inductor", "fxgraph_cache_hit"): "hit", ("aot_autograd", "autograd_cache_hit"): "hit",
                  ("inductor", "fxgraph_cache_miss"): "miss", ("aot_autograd", "autograd_cache_miss"): "miss"}


class CompiledForward:
    """A module's forward through ``torch.compile``, installed as the module's ``forward``
    (its parameters and checkpoint keys stay as they are)."""

    def __init__(self, module: nn.Module, name: str, *, dynamic_image_size: bool, options: Dict[str, Any]):
        """
        Args:
            dynamic_image_size: the height and width of its (B, C, H, W) inputs are symbolic.
            options: inductor's settings (``torch.compile``'s ``options``).
        """
        self.name = name
        self.eager = type(module).forward.__get__(module)
        self.dynamic_image_size = dynamic_image_size
        self.compiled = torch.compile(self.eager, options=options, dynamic=None if dynamic_image_size else False)
        self.enabled = True

    def __call__(self, *args, **kwargs):
        if not (self.enabled and compiled_calls_apply()):
            return self.eager(*args, **kwargs)
        if self.dynamic_image_size:
            for tensor in tensors_of((args, kwargs)):
                if tensor.dim() == 4:  # (B, C, H, W): one graph for every height and width
                    torch._dynamo.maybe_mark_dynamic(tensor, 2)
                    torch._dynamo.maybe_mark_dynamic(tensor, 3)
        with _COMPILING.running(self.name):
            return self.compiled(*args, **kwargs)


def compiled_calls_apply() -> bool:
    """Whether a compiled module runs its graph now: inference without gradients, outside
    ``torch.export`` and TorchScript tracing."""
    return not (torch.is_grad_enabled() or torch.compiler.is_exporting() or torch.jit.is_tracing())


def tensors_of(value) -> Iterator[torch.Tensor]:
    """The tensors in ``value``'s (nested) tuples, lists and dict values."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_of(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_of(item)


class CompileLog:
    """Logs each graph torch.compile builds: a progress line every :data:`PROGRESS_EVERY_S`
    seconds while it compiles, then its time and whether inductor's cache served it. Keeps the
    list of graphs built (:attr:`graphs`) for reports."""

    def __init__(self):
        self.local = threading.local()
        self.graphs: List[dict] = []
        self.registered = False
        # The graph compiling now: its module, start time, cache counters then, progress stop.
        self.name, self.started, self.counters, self.done = "", None, {}, threading.Event()

    @contextmanager
    def running(self, name: str):
        self.register()
        previous, self.local.name = getattr(self.local, "name", None), name
        try:
            yield
        finally:
            self.local.name = previous

    def register(self) -> None:
        """Hook dynamo's compile start and end (once per process)."""
        if not self.registered:
            from torch._dynamo.callback import CallbackTrigger, callback_handler

            def start(args) -> None:
                if args.callback_trigger == CallbackTrigger.DYNAMO:
                    self.start(getattr(self.local, "name", None) or "a graph")

            def end(args) -> None:
                if args.callback_trigger == CallbackTrigger.DYNAMO:
                    self.end()

            callback_handler.register_start_callback(start)
            callback_handler.register_end_callback(end)
            self.registered = True

    def start(self, name: str) -> None:
        started, done = time.perf_counter(), threading.Event()
        self.name, self.started, self.counters, self.done = name, started, cache_counters(), done

        def progress() -> None:
            while not done.wait(PROGRESS_EVERY_S):
                logger.info("compiling %s (torch.compile, inductor): %.0f s so far", name,
                            time.perf_counter() - started)

        threading.Thread(target=progress, daemon=True).start()

    def end(self) -> None:
        if self.started is None:
            return
        self.done.set()
        seconds = time.perf_counter() - self.started
        after = cache_counters()
        cache = {kind: sum(after.get(k, 0) - self.counters.get(k, 0) for k, v in CACHE_COUNTERS.items() if v == kind)
                 for kind in ("hit", "miss")}
        self.graphs.append({"module": self.name, "seconds": seconds, "cache_hits": cache["hit"],
                            "cache_misses": cache["miss"]})
        served = ("from inductor's cache" if cache["hit"] and not cache["miss"]
                  else "inductor's cache missed: compiled anew" if cache["miss"] else "no cached artefact used")
        logger.info("compiled %s in %.1f s (%s, %s)", self.name, seconds, served, cache_dir())
        self.started = None


def cache_counters() -> Dict:
    from torch._dynamo.utils import counters

    return {key: counters[key[0]][key[1]] for key in CACHE_COUNTERS}


_COMPILING = CompileLog()


def compile_log() -> List[dict]:
    """The graphs compiled in this process so far: module, seconds, cache hits and misses."""
    return list(_COMPILING.graphs)


def cache_dir() -> str:
    """The folder of inductor's on-disk caches."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir as inductor_cache_dir

    return inductor_cache_dir()


def configure_caches(cache_folder: str) -> None:
    """Inductor's on-disk caches in ``cache_folder`` ("": inductor's default,
    ``TORCHINDUCTOR_CACHE_DIR`` or a folder under the system's temporary one)."""
    import torch._inductor.config as inductor

    if cache_folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.expanduser(cache_folder)
    inductor.fx_graph_cache = True
    inductor.autotune_local_cache = True


def freezable(module: nn.Module) -> bool:
    """Whether inductor may freeze ``module``'s weights. Not with a transposed convolution:
    inductor's freezing (torch 2.12) folds a BatchNorm that follows one into its weight along
    the input channels instead of the output ones, silently wrong when the two counts are equal
    (EOV-Seg's Lite Aggregator)."""
    return not any(isinstance(m, nn.modules.conv._ConvTransposeNd) for m in module.modules())


def inductor_options(mode: Optional[str], module: nn.Module, device: torch.device) -> Dict[str, Any]:
    """Inductor's settings for ``module``: those of torch.compile's ``mode``, and on the CPU
    frozen weights (constant folding, oneDNN weight packing) where :func:`freezable`."""
    from torch._inductor import list_mode_options

    return {**(list_mode_options(mode) if mode else {}), "freezing": device.type == "cpu" and freezable(module)}


def compile_modules(modules: Dict[str, nn.Module], *, dynamic_image_size: bool, mode: Optional[str],
                    device: torch.device) -> None:
    """Install :class:`CompiledForward` on each of ``modules`` (name -> module); the graphs are
    built at their first call."""
    for name, module in modules.items():
        if isinstance(module.forward, CompiledForward):
            raise RuntimeError(f"{name} is compiled already")
        module.forward = CompiledForward(module, name, dynamic_image_size=dynamic_image_size,
                                         options=inductor_options(mode, module, device))


def compiled_forwards(model: nn.Module) -> List[CompiledForward]:
    return [m.forward for m in model.modules() if isinstance(m.__dict__.get("forward"), CompiledForward)]


def is_compiled(model: nn.Module) -> bool:
    """Whether some module of ``model`` runs through torch.compile."""
    return bool(compiled_forwards(model))


@contextmanager
def eager(model: nn.Module):
    """Within the block, ``model``'s compiled modules run their own forward."""
    forwards = compiled_forwards(model)
    for forward in forwards:
        forward.enabled = False
    try:
        yield
    finally:
        for forward in forwards:
            forward.enabled = True


def compile_mode(configured: str, device: torch.device) -> Optional[str]:
    """torch.compile's ``mode``: the configured one, else the device's default (None: inductor's default)."""
    return configured or DEFAULT_MODES.get(device.type)


def compile_model(model: nn.Module, cfg) -> nn.Module:
    """Compile ``model``'s image side as its family names it (``ModelFamily.compile``), with
    ``cfg.TEST.COMPILE_MODE`` and ``cfg.TEST.COMPILE_CACHE_DIR``; call it once the weights are
    loaded. A family without a compile description stops."""
    from .family import get_family

    family = get_family(cfg)
    if family.compile is None:
        raise ValueError(f"TEST.COMPILE: {family.title} does not say what to compile (ModelFamily.compile)")
    configure_caches(cfg.TEST.COMPILE_CACHE_DIR)
    mode = compile_mode(cfg.TEST.COMPILE_MODE, model.device)
    modules = family.compile.modules(model)
    compile_modules(modules, dynamic_image_size=family.compile.dynamic_image_size, mode=mode, device=model.device)
    logger.info("TEST.COMPILE: %s, torch.compile of %s at the first image (mode %s; inductor's cache: %s)",
                family.title, ", ".join(modules), mode or "default", cache_dir())
    return model


def maybe_compile(model: nn.Module, cfg) -> nn.Module:
    """:func:`compile_model` where ``cfg.TEST.COMPILE`` asks for it; ``model`` as it is otherwise."""
    return compile_model(model, cfg) if cfg.TEST.COMPILE else model
