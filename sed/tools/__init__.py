"""The project's command-line tools, as modules of the package.

Each module has ``main(argv=None) -> int``, which parses ``argv`` (the process's arguments when
None) and returns the exit status, and runs as ``python -m sed.tools.<name>``. The repository's
``tools/<name>.py`` are thin wrappers around them (the documented commands), and the package
declares console entry points for some (``sed-demo``, ``sed-web-demo``, ``sed-export``,
``sed-benchmark``):

- :mod:`sed.tools.demo`: segment images and videos with your own class names.
- :mod:`sed.tools.web_demo`: the same in the browser (Gradio).
- :mod:`sed.tools.export`: export a model to ONNX and check it with onnxruntime.
- :mod:`sed.tools.benchmark`: speed and memory of inference, training steps or text embedding.
- :mod:`sed.tools.eval_summary`: eval.sh's published benchmarks of a config and their table.
- :mod:`sed.tools.check_dataset`: check a custom dataset folder.
- :mod:`sed.tools.pretrain_tiny_clip`: pretrain a random-init CLIP for SED's embedded default.

The tools know the models only through the model-family registry (:mod:`sed.family`): the
config's ``MODEL.META_ARCHITECTURE`` picks its family.
"""
