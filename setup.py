from setuptools import find_packages, setup

setup(
    name="sed",
    version="0.1.0",
    description="SED: A Simple Encoder-Decoder for Open-Vocabulary Semantic Segmentation (detectron2)",
    packages=find_packages(include=["sed", "sed.*"]),
    python_requires=">=3.9",
    package_data={"sed": ["model_configs/*.json", "data/vocabularies/*.json"]},
    # Optional: ONNX export and onnxruntime deployment (tools/export.py, sed.deploy).
    extras_require={"export": ["onnx==1.23.2", "onnxruntime==1.31.1", "onnxscript==0.7.2"]},
)
