from setuptools import find_packages, setup

# Core runtime dependencies, at the oldest versions known to work; requirements.txt pins the
# tested versions (tools/install.sh installs with it as constraints). detectron2 is left out:
# it is not on the package index under its own name (INSTALL.md, "Installing as a package").
INSTALL_REQUIRES = [
    "torch>=2.4",  # tools/bundle.py MIN_TORCH
    "torchvision>=0.19",  # the release made for torch 2.4
    "open_clip_torch>=2.24",
    "timm>=1.0",
    "fvcore>=0.1.5",
    "iopath>=0.1.7",
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "pycocotools>=2.0.7",
    "scipy>=1.10",
    "Pillow>=10.0",
    "tabulate>=0.9",
    # detectron2's own runtime dependencies (it is installed without them)
    "matplotlib>=3.7",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "cloudpickle>=2.0",
    "tqdm>=4.29",
    "tensorboard>=2.12",
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1",
    "packaging>=21.0",
]

setup(
    name="sed",
    version="0.1.0",
    description="SED: A Simple Encoder-Decoder for Open-Vocabulary Semantic Segmentation (detectron2)",
    packages=find_packages(include=["sed", "sed.*"]),
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    # Vocabularies, reference tables and open_clip model configs, read from the installed
    # package as plain files (sed/resources.py): not zip-safe.
    package_data={"sed": ["vocabularies/**/*.json", "reference/*", "model_configs/*.json"]},
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "sed-demo = sed.tools.demo:main",
            "sed-web-demo = sed.tools.web_demo:main",
            "sed-export = sed.tools.export:main",
            "sed-benchmark = sed.tools.benchmark:main",
        ],
    },
    # Optional capabilities (tools/install.sh installs them, with requirements.txt as constraints).
    extras_require={
        # tools/export.py, sed.deploy: ONNX export and onnxruntime deployment
        "export": ["onnx==1.23.2", "onnxruntime==1.31.1", "onnxscript==0.7.2"],
        # tools/web_demo.py: the demo in a browser (Gradio 6 needs Python 3.10+)
        "web": ['gradio==6.31.0; python_version >= "3.10"', 'gradio_client==2.7.2; python_version >= "3.10"'],
        # tests/test_web_demo.py drives the web demo in Chromium (apt-get install chromium chromium-driver)
        "web-test": ['selenium==4.51.0; python_version >= "3.10"'],
    },
)
