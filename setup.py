"""pix2seq-tfx. Dataflow workers and the pipeline image install this with --setup_file."""
from setuptools import setup

setup(
    name="pix2seq-tfx",
    version="0.1.0",
    description="Pix2Seq v2 (detection, segmentation, keypoints, captioning as tokens) as a TFX pipeline",
    python_requires=">=3.10,<3.11",
    packages=[
        "pix2seq",
        "pipeline",
        "components",
        "model",
        "model.tasks",
        "data",
        "serving",
    ],
    package_data={"serving": ["configs/*"]},
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "keras>=3.3,<4",
        "tensorflow-serving-api==2.16.1",
        "apache-beam[gcp]==2.59.0",
        "dill",
        "pycocotools>=2.0.7,<2.1",
        "pycocoevalcap",
        "sentencepiece>=0.2,<0.3",
        "pillow",
        "tqdm",
        "grpcio",
        "kfp-pipeline-spec==0.2.2",
    ],
    entry_points={"console_scripts": ["pix2seq=pix2seq.cli:main"]},
)
