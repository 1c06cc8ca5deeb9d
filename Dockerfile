# The pipeline image: every step of the compiled Vertex AI / Kubeflow pipeline
# (and, with --sdk_container_image, every Dataflow worker) runs in it.
# TFX 1.16's official image (Python 3.10, tfx 1.16.0, TF 2.16) + this package
# installed with the locked dependency set, so the Trainer's run_fn is found by
# module path (`model.trainer_module.run_fn`) and nothing is uploaded at compile time.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/pix2seq/pipeline:TAG .
#   docker push REGION-docker.pkg.dev/PROJECT/pix2seq/pipeline:TAG
FROM gcr.io/tfx-oss-public/tfx:1.16.0

# Java for the COCO caption evaluation's PTB tokenizer (Stanford CoreNLP, shipped in pycocoevalcap).
RUN apt-get update \
    && apt-get install -y --no-install-recommends default-jre-headless \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /pipeline
COPY requirements.lock setup.py ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pix2seq ./pix2seq
COPY pipeline ./pipeline
COPY components ./components
COPY model ./model
COPY data ./data
COPY serving ./serving
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import pipeline.pipeline, model.trainer_module, components.coco_evaluator.executor"

ENV TF_USE_LEGACY_KERAS=0 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONPATH=/pipeline
# Entry point is the TFX base image's: each step's command runs a TFX executor.
