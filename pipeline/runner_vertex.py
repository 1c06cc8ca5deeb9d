"""Compile the pipeline for Vertex AI Pipelines / Kubeflow Pipelines v2 and submit it.

`compile_pipeline` runs TFX's KubeflowV2DagRunner offline: it writes a
PipelineJob JSON (Vertex: `pipelineSpec` + `runtimeConfig`) or, for Kubeflow,
the bare KFP v2 `PipelineSpec`. Every step runs in one container image (the
Dockerfile: TFX 1.16 + this package), so the Trainer's run_fn is referenced by
module path (`model.trainer_module.run_fn`) and nothing is uploaded at compile
time. `submit` hands the JSON to Vertex AI with google-cloud-aiplatform when
credentials exist.

TPU training: with `VertexConfig.training == "tpu"` the Trainer becomes the
TFX Vertex training extension's Trainer, which starts a Vertex AI CustomJob on a
Cloud TPU worker running the same image; the run_fn's strategy factory finds the
TPU (TPUClusterResolver) and uses TPUStrategy. Beam steps (ingestion,
statistics, evaluation) go to Dataflow when the preset's Beam args say
`--runner=DataflowRunner`; their workers use the same image.

Caching: KFP v2 runs no custom drivers (only TFX's own FileBasedExampleGen
driver), so CocoExampleGen's input fingerprint is never computed before Vertex's
cache lookup. The compiled spec therefore turns caching off for that one step:
ingestion always runs, and the steps after it are reused only when their inputs
come out the same.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import pix2seq  # noqa: F401
from tfx import v1 as tfx

from pipeline import pipeline as pipeline_lib

TARGETS = ("vertex", "kubeflow")


def worker_pool_specs(vertex, image: str) -> list:
    """Vertex AI CustomJob worker pool for the Trainer: a Cloud TPU or a GPU VM running `image`."""
    if vertex.training == "tpu":
        machine = {"machine_type": "cloud-tpu", "accelerator_type": vertex.tpu_type,
                   "accelerator_count": vertex.tpu_cores}
    elif vertex.training == "gpu":
        machine = {"machine_type": vertex.machine_type, "accelerator_type": vertex.gpu_type,
                   "accelerator_count": vertex.gpu_count}
    else:
        raise ValueError(f"VertexConfig.training must be 'tpu', 'gpu' or ''. Received: {vertex.training!r}")
    return [{"machine_spec": machine, "replica_count": 1, "container_spec": {"image_uri": image}}]


def trainer_extension_config(config, image: str) -> Optional[Dict[str, Any]]:
    """The Vertex training extension settings for `create_pipeline`, or None (train in the step)."""
    vertex = config.vertex
    if not vertex.training:
        return None
    return {"project": vertex.project, "region": vertex.region,
            "worker_pool_specs": worker_pool_specs(vertex, image)}


def beam_args_for_image(args, image: str) -> tuple:
    """Dataflow workers run the pipeline image (it has this package and its pins)."""
    args = tuple(args)
    if any(a.startswith("--runner=DataflowRunner") for a in args) and not any(
            a.startswith("--sdk_container_image") for a in args):
        args += (f"--sdk_container_image={image}",)
    return args


def compile_pipeline(config, target: str, image: str, out_file: str) -> str:
    """Writes the compiled pipeline JSON for `target` ('vertex' or 'kubeflow'); returns its path."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}. Received: {target!r}")
    if not image:
        raise ValueError("an --image is required: every step runs in the pipeline container image")
    config = config.replace(beam_pipeline_args=beam_args_for_image(config.beam_pipeline_args, image))
    pipeline = pipeline_lib.from_config(config, metadata_connection_config=None,
                                        trainer_extension_config=trainer_extension_config(config, image))
    out_dir = os.path.dirname(os.path.abspath(out_file))
    os.makedirs(out_dir, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=out_dir, output_filename=os.path.basename(out_file))
    runner.run(pipeline, write_out=True)
    with open(out_file) as f:
        job = json.load(f)
    spec = job["pipelineSpec"]
    # No driver, no input fingerprint: a cached ingestion could be stale.
    spec["root"]["dag"]["tasks"][pipeline_lib.EXAMPLE_GEN].pop("cachingOptions", None)
    if target == "kubeflow":
        # KFP v2 takes the PipelineSpec itself (runtime config is given at run creation).
        spec.setdefault("defaultPipelineRoot", job.get("runtimeConfig", {}).get("gcsOutputDirectory", ""))
        job = spec
    with open(out_file, "w") as f:
        json.dump(job, f, indent=2, sort_keys=True)
    return out_file


def submit(job_file: str, config, service_account: str = "") -> str:
    """Submits a compiled Vertex PipelineJob JSON; returns the job's resource name.

    Needs Application Default Credentials (`gcloud auth application-default login`
    or a service account) and `VertexConfig.project`.
    """
    import google.auth
    from google.auth import exceptions as auth_exceptions

    try:
        _, default_project = google.auth.default()
    except auth_exceptions.DefaultCredentialsError as err:
        raise RuntimeError(f"cannot submit: no Google Cloud credentials ({err}). Run "
                           "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS.") from err
    from google.cloud import aiplatform

    project = config.vertex.project or default_project
    if not project:
        raise RuntimeError("cannot submit: no project (set VertexConfig.project or a default gcloud project)")
    aiplatform.init(project=project, location=config.vertex.region)
    job = aiplatform.PipelineJob(display_name=config.name, template_path=job_file,
                                 pipeline_root=config.pipeline_root,
                                 # None keeps the compiled per-step settings (a bool would
                                 # re-enable caching for CocoExampleGen too)
                                 enable_caching=None if config.enable_cache else False)
    job.submit(service_account=service_account or config.vertex.service_account or None)
    return job.resource_name
