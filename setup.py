from setuptools import find_packages, setup

setup(
    name="sed",
    version="0.1.0",
    description="SED: A Simple Encoder-Decoder for Open-Vocabulary Semantic Segmentation (detectron2)",
    packages=find_packages(include=["sed", "sed.*"]),
    python_requires=">=3.9",
    package_data={"sed": ["model_configs/*.json", "data/vocabularies/*.json"]},
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
