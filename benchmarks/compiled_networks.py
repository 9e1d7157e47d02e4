"""Each network that TEST.COMPILE compiles, alone, against its eager forward (the hand-fused CPU
kernels): median of 5 passes, eager and compiled in turn, after one untimed call of each.
Random weights (seed 0), one random 640x853 image (SED: resized to its 768x768 input; EOV-Seg:
padded to 640x864), float32. Run it after tools/benchmark.py --compile with the same CACHE
folder, so that the graphs load from inductor's cache.

    python benchmarks/compiled_networks.py OUT.json LABEL CONFIG CACHE [LABEL CONFIG CACHE ...]
"""
import json
import statistics
import sys
import time

import torch
from detectron2.modeling import build_model
from detectron2.structures import ImageList

from sed.compile import compile_model, eager
from sed.family import get_family
from sed.predictor import load_config
from sed.tools.benchmark import cpu_name


def network_calls(model, modules, image):
    """name -> a call of that network on ``image``'s input to it."""
    if "encoder" in modules:  # SED
        x = model.preprocess([{"image": image}])
        return {"encoder": lambda: model.encoder(x)}
    x = ImageList.from_tensors(model.normalize([{"image": image}]), model.size_divisibility).tensor
    x = x.contiguous(memory_format=torch.channels_last)
    features = model.cnn_backbone(x)
    return {"cnn_backbone": lambda: model.cnn_backbone(x), "vit_backbone": lambda: model.vit_backbone(x),
            "lite_aggr": lambda: model.lite_aggr(features)}


def measure(config: str, cache: str, passes: int = 5) -> dict:
    family = get_family(load_config(config))
    cfg = load_config(config, opts=["MODEL.DEVICE", "cpu", *family.benchmark.random_init_opts,
                                    "TEST.COMPILE_CACHE_DIR", cache])
    torch.manual_seed(0)
    model = compile_model(build_model(cfg).eval(), cfg)
    image = torch.randint(0, 256, (3, 640, 853), dtype=torch.uint8)
    figures = {}
    with torch.no_grad():
        for name, call in network_calls(model, family.compile.modules(model), image).items():
            times = {"eager": [], "compiled": []}
            call()
            for i in range(passes + 1):
                for mode in times:
                    start = time.perf_counter()
                    if mode == "eager":
                        with eager(model):
                            call()
                    else:
                        call()
                    if i:
                        times[mode].append(time.perf_counter() - start)
            figures[name] = {mode: statistics.median(t) * 1000 for mode, t in times.items()}
    return {"config": config, "ms_median": figures}


def main(argv) -> None:
    out, specs = argv[0], argv[1:]
    results = {"what": __doc__.split("\n\n")[0].replace("\n", " "), "device_name": cpu_name(),
               "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "models": {}}
    for label, config, cache in zip(specs[0::3], specs[1::3], specs[2::3]):
        results["models"][label] = measure(config, cache)
        print(label, json.dumps(results["models"][label]["ms_median"]), flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
