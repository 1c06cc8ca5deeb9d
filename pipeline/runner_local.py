"""Run the pipeline here with LocalDagRunner and SQLite ML Metadata, then read
back from MLMD what happened (per-component state and time, artifacts).

A rerun with nothing changed finds every execution in the cache (same inputs,
same properties, same input and code fingerprints) and reuses its outputs; the
summary shows the fingerprints the run was keyed on.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional

import pix2seq  # noqa: F401
from tfx import v1 as tfx

from pipeline import pipeline as pipeline_lib
from pipeline import progress

_STATE_NAMES = {0: "UNKNOWN", 1: "NEW", 2: "RUNNING", 3: "COMPLETE", 4: "FAILED", 5: "CACHED", 6: "CANCELED"}


@dataclasses.dataclass
class ComponentRun:
    component: str
    state: str
    seconds: float


@dataclasses.dataclass
class RunSummary:
    """What one local run produced, read from MLMD and the artifacts."""

    pipeline_name: str
    run_id: str
    components: List[ComponentRun]
    metrics: Optional[dict]  # the evaluation's metrics.json
    evaluation_uri: Optional[str]
    blessed: Optional[bool]
    blessing_message: str
    pushed: bool
    pushed_destination: Optional[str]
    model_uri: Optional[str]
    examples_uri: Optional[str]
    schema_uri: Optional[str]
    input_fingerprint: str = ""  # of the COCO files the Examples were ingested from
    code_fingerprint: str = ""  # of the training code the model was trained with
    already_served: bool = False  # the pushed model equals the newest served version: nothing copied
    pushed_model_id: Optional[int] = None
    model_card: Optional[str] = None  # the pushed model's card (JSON; Markdown beside it)
    evaluation_id: Optional[int] = None  # MLMD ids of the evaluator's outputs
    blessing_id: Optional[int] = None

    @property
    def pictures(self) -> List[str]:
        return list((self.metrics or {}).get("pictures") or [])


def absolute(config):
    """Local paths in a PipelineConfig made absolute (TFX stores them in MLMD)."""
    def fix(path):
        return path if "://" in path else os.path.abspath(path)

    train = config.train
    if train.init_checkpoint:
        train = train.replace(init_checkpoint=fix(train.init_checkpoint))
    return config.replace(coco_dir=fix(config.coco_dir), pipeline_root=fix(config.pipeline_root),
                          serving_dir=fix(config.serving_dir), metadata_path=fix(config.metadata_path),
                          train=train)


def run(config) -> RunSummary:
    """Runs the whole pipeline for a PipelineConfig; returns the run's summary.

    The Trainer runs in this process, so the training's TF thread pool is set here,
    before the first component starts TF (model/tf_threads.py)."""
    from model import tf_threads

    tf_threads.configure(config.train.inter_op_threads)
    config = absolute(config)
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    tfx_pipeline = pipeline_lib.from_config(config, metadata)
    with progress.component_lines(len(tfx_pipeline.components)):
        tfx.orchestration.LocalDagRunner().run(tfx_pipeline)
    summary = summarize(config.metadata_path, config.name)
    summary.model_card = publish_model_card(summary, dataclasses.asdict(config.train))
    return summary


def publish_model_card(summary: RunSummary, train_config: Optional[dict] = None) -> Optional[str]:
    """Copy the evaluator's model card next to the pushed version, with the push's ids
    (components/model_card.py); returns its JSON path, or None when nothing was pushed."""
    from components import model_card

    if not (summary.pushed and summary.pushed_destination and summary.evaluation_uri):
        return None
    card = model_card.read(os.path.join(summary.evaluation_uri, model_card.CARD_DIR, model_card.JSON_FILE))
    if card is None:
        return None
    card = model_card.with_push(card, summary.pushed_destination, summary.pushed_model_id, summary.run_id,
                                train_config, lineage={"evaluation_id": summary.evaluation_id,
                                                       "blessing_id": summary.blessing_id})
    return model_card.publish_next_to(card, summary.pushed_destination)


def summarize(metadata_path: str, pipeline_name: str, run_id: Optional[str] = None) -> RunSummary:
    """Reads the latest (or the given) run of `pipeline_name` back from the SQLite MLMD."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline_ctx is None:
        raise RuntimeError(f"no run of pipeline {pipeline_name!r} in {metadata_path}")
    type_names = {t.id: t.name for t in store.get_context_types()}
    contexts_of = {ex.id: store.get_contexts_by_execution(ex.id)
                   for ex in store.get_executions_by_context(pipeline_ctx.id)}
    runs = {c.id: c for ctxs in contexts_of.values() for c in ctxs if type_names[c.type_id] == "pipeline_run"}
    if run_id is None:
        run_ctx = max(runs.values(), key=lambda c: c.create_time_since_epoch)
    else:
        run_ctx = next(c for c in runs.values() if c.name == run_id)
    executions = store.get_executions_by_context(run_ctx.id)
    prefix = pipeline_name + "."
    node_of = {}
    for ex in executions:
        for ctx in contexts_of.get(ex.id, []):
            if type_names[ctx.type_id] == "node":
                node_of[ex.id] = ctx.name[len(prefix):] if ctx.name.startswith(prefix) else ctx.name
    components = []
    for ex in sorted(executions, key=lambda e: e.create_time_since_epoch):
        seconds = max(0.0, (ex.last_update_time_since_epoch - ex.create_time_since_epoch) / 1000.0)
        components.append(ComponentRun(node_of.get(ex.id, str(ex.type)),
                                       _STATE_NAMES.get(ex.last_known_state, str(ex.last_known_state)),
                                       seconds))

    outputs = _outputs_by_node(store, executions, node_of)
    evaluation = _first(outputs, pipeline_lib.EVALUATOR, "evaluation")
    blessing = _first(outputs, pipeline_lib.EVALUATOR, "blessing")
    pushed_model = _first(outputs, pipeline_lib.PUSHER, "pushed_model")
    model = _first(outputs, pipeline_lib.TRAINER, "model")
    examples = _first(outputs, pipeline_lib.EXAMPLE_GEN, "examples")
    schema = _first(outputs, pipeline_lib.SCHEMA_GEN, "schema")
    metrics = None
    if evaluation is not None:
        path = os.path.join(evaluation.uri, "metrics.json")
        if os.path.exists(path):
            with open(path) as f:
                metrics = json.load(f)
    props = blessing.custom_properties if blessing is not None else {}
    push_props = pushed_model.custom_properties if pushed_model is not None else {}
    example_props = examples.custom_properties if examples is not None else {}
    return RunSummary(
        pipeline_name=pipeline_name,
        run_id=run_ctx.name,
        components=components,
        metrics=metrics,
        evaluation_uri=evaluation.uri if evaluation is not None else None,
        blessed=bool(props["blessed"].int_value) if "blessed" in props else None,
        blessing_message=props["blessing_message"].string_value if "blessing_message" in props else "",
        pushed=bool(push_props["pushed"].int_value) if "pushed" in push_props else False,
        pushed_destination=(push_props["pushed_destination"].string_value
                            if "pushed_destination" in push_props else None),
        model_uri=model.uri if model is not None else None,
        examples_uri=examples.uri if examples is not None else None,
        schema_uri=schema.uri if schema is not None else None,
        input_fingerprint=(example_props["input_fingerprint"].string_value
                           if "input_fingerprint" in example_props else ""),
        code_fingerprint=_trainer_code_fingerprint(executions, node_of),
        already_served=bool(push_props["already_served"].int_value) if "already_served" in push_props else False,
        pushed_model_id=pushed_model.id if pushed_model is not None else None,
        evaluation_id=evaluation.id if evaluation is not None else None,
        blessing_id=blessing.id if blessing is not None else None,
    )


def _trainer_code_fingerprint(executions, node_of) -> str:
    """`code_fingerprint` from the Trainer execution's custom_config (cached runs record it too)."""
    for ex in executions:
        if node_of.get(ex.id) == pipeline_lib.TRAINER and "custom_config" in ex.custom_properties:
            return json.loads(ex.custom_properties["custom_config"].string_value or "{}").get("code_fingerprint", "")
    return ""


def _outputs_by_node(store, executions, node_of) -> Dict[str, Dict[str, list]]:
    """{node: {output key: [artifact]}} from the run's output events (cached runs included)."""
    from ml_metadata.proto import metadata_store_pb2

    out: Dict[str, Dict[str, list]] = {}
    events = store.get_events_by_execution_ids([e.id for e in executions])
    wanted = [e for e in events if e.type in (metadata_store_pb2.Event.OUTPUT,
                                              metadata_store_pb2.Event.DECLARED_OUTPUT)]
    artifacts = {a.id: a for a in store.get_artifacts_by_id(list({e.artifact_id for e in wanted}))}
    for event in wanted:
        key = event.path.steps[0].key if event.path.steps else ""
        node = node_of.get(event.execution_id, "")
        out.setdefault(node, {}).setdefault(key, []).append(artifacts[event.artifact_id])
    return out


def _first(outputs, node, key):
    found = outputs.get(node, {}).get(key) or []
    return found[-1] if found else None
