"""The pipeline compiles offline for Vertex AI Pipelines and Kubeflow Pipelines v2."""
import json

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline import pipeline as pipeline_lib
from pipeline import presets, runner_vertex

IMAGE = "us-docker.pkg.dev/my-project/pix2seq/pipeline:1.0"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    coco = presets.get("coco", pipeline_root="gs://bucket/root", serving_dir="gs://bucket/serving",
                       vertex=presets.VertexConfig(project="my-project", training="tpu"))
    vertex = runner_vertex.compile_pipeline(coco, "vertex", IMAGE, str(out / "vertex.json"))
    demo = presets.get("demo", pipeline_root="gs://bucket/demo-root")
    kubeflow = runner_vertex.compile_pipeline(demo, "kubeflow", IMAGE, str(out / "kubeflow.json"))
    with open(vertex) as f:
        vertex_job = json.load(f)
    with open(kubeflow) as f:
        kubeflow_spec = json.load(f)
    return vertex_job, kubeflow_spec


def _text(obj) -> str:
    return json.dumps(obj)


def test_vertex_job_names_components_image_and_run_fn(compiled):
    job, _ = compiled
    spec = job["pipelineSpec"]
    tasks = spec["root"]["dag"]["tasks"]
    for component in pipeline_lib.COMPONENT_IDS:
        if component == pipeline_lib.RESOLVER:  # compiled as two resolver tasks
            assert any(t.startswith(component) for t in tasks)
        else:
            assert component in tasks, component
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e}
    assert images == {IMAGE}
    params = tasks["Trainer"]["inputs"]["parameters"]
    assert params["run_fn"]["runtimeValue"]["constantValue"]["stringValue"] == pipeline_lib.RUN_FN
    assert "module_file" not in params  # nothing to build or upload at compile time
    trainer = _text(params["custom_config"])
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/root"
    # TPU training through the Vertex training extension, with the same image.
    trainer_exec = _text(spec["deploymentSpec"]["executors"]["Trainer_executor"])
    assert "google_cloud_ai_platform.trainer.executor" in trainer_exec
    assert "cloud-tpu" in trainer and "TPU_V3" in trainer and "my-project" in trainer
    # Beam steps on Dataflow run in the pipeline image.
    example_gen = _text(spec["deploymentSpec"]["executors"]["CocoExampleGen_executor"])
    assert "--runner=DataflowRunner" in example_gen and f"--sdk_container_image={IMAGE}" in example_gen


def test_kubeflow_spec_trains_in_the_step(compiled):
    _, spec = compiled
    assert set(pipeline_lib.COMPONENT_IDS) - {pipeline_lib.RESOLVER} <= set(spec["root"]["dag"]["tasks"])
    assert spec["defaultPipelineRoot"] == "gs://bucket/demo-root"
    trainer_exec = _text(spec["deploymentSpec"]["executors"]["Trainer_executor"])
    assert "google_cloud_ai_platform" not in trainer_exec and IMAGE in trainer_exec
    params = spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]
    assert params["run_fn"]["runtimeValue"]["constantValue"]["stringValue"] == pipeline_lib.RUN_FN


def test_ingestion_is_never_served_from_the_vertex_cache(compiled):
    """KFP v2 runs no custom driver, so nothing would fingerprint the COCO files: no cache for ingestion."""
    job, spec = compiled
    for tasks in (job["pipelineSpec"]["root"]["dag"]["tasks"], spec["root"]["dag"]["tasks"]):
        assert "cachingOptions" not in tasks[pipeline_lib.EXAMPLE_GEN]
        assert tasks[pipeline_lib.TRAINER]["cachingOptions"] == {"enableCache": True}


def test_round_trip_through_the_kfp_spec_parser(compiled):
    job, spec = compiled
    parsed_job = json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
    assert json_format.MessageToDict(parsed_job) == job
    parsed_spec = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    assert json_format.MessageToDict(parsed_spec) == spec
    assert parsed_spec.pipeline_info.name == presets.get("demo").name
    assert set(parsed_job.pipeline_spec["root"]["dag"]["tasks"]) == set(job["pipelineSpec"]["root"]["dag"]["tasks"])


def test_compile_errors():
    with pytest.raises(ValueError, match="target"):
        runner_vertex.compile_pipeline(presets.get("demo"), "airflow", IMAGE, "/tmp/x.json")
    with pytest.raises(ValueError, match="image"):
        runner_vertex.compile_pipeline(presets.get("demo"), "vertex", "", "/tmp/x.json")
    with pytest.raises(ValueError, match="training"):
        runner_vertex.worker_pool_specs(presets.VertexConfig(training="fpga"), IMAGE)
