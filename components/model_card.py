"""A model card: what a served model is, what it was trained and judged on, and where it came from.

The CocoEvaluator writes one per evaluated model into its `ModelEvaluation` artifact
(`model_card/model_card.{json,md}`), where every orchestrator (local, Vertex, Kubeflow)
keeps it; after a local run the runner copies it next to the version the Pusher
published (`<serving_dir>/<version>.model_card.{json,md}`: outside the version
directory, which stays the exact files the Trainer exported), adding the push's ids.

JSON layout (`build`):
  model     uri, artifact id, SavedModel dir, model config (the export's
            `assets.extra/model_config.json`)
  data      Examples uri and id, eval split, images scored, categories
  metrics   the candidate's COCO / caption metrics; `baseline` the baseline's, if any
  blessing  blessed, reasons, checks
  lineage   MLMD ids: model, examples, baseline model, evaluation, blessing, pipeline run
  push      (added by `with_push`) version, destination, pushed-model id, run id
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import tensorflow as tf

from model.export import MODEL_CONFIG_FILE

CARD_DIR = "model_card"
JSON_FILE = "model_card.json"
MARKDOWN_FILE = "model_card.md"


def _read_json(path: str) -> Optional[dict]:
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def build(report: Dict[str, Any], model, examples, baseline, evaluation, blessing, saved_model_dir: str,
          categories=(), pipeline_run_id: str = "") -> Dict[str, Any]:
    """The card of the evaluated model from the evaluator's `report` (metrics.json) and artifacts."""
    def artifact_id(a):
        return int(a.id) if a is not None and a.id else None

    return {
        "model": {"uri": model.uri, "artifact_id": artifact_id(model), "saved_model": saved_model_dir,
                  "config": _read_json(os.path.join(saved_model_dir, MODEL_CONFIG_FILE))},
        "data": {"examples_uri": examples.uri, "examples_id": artifact_id(examples),
                 "eval_split": report.get("eval_split"), "num_images": report.get("num_images"),
                 "categories": [{"id": int(c["id"]), "name": c.get("name", "")} for c in categories]},
        "metrics": report.get("candidate", {}),
        "baseline": ({"uri": baseline.uri, "metrics": report.get("baseline", {})}
                     if baseline is not None else None),
        "blessing": report.get("blessing", {}),
        "lineage": {"model_id": artifact_id(model), "examples_id": artifact_id(examples),
                    "baseline_model_id": artifact_id(baseline), "evaluation_id": artifact_id(evaluation),
                    "blessing_id": artifact_id(blessing), "pipeline_run_id": pipeline_run_id or None},
    }


def with_push(card: Dict[str, Any], destination: str, pushed_model_id=None, run_id: str = "",
              train_config: Optional[dict] = None, lineage: Optional[dict] = None) -> Dict[str, Any]:
    """The card of a pushed model: `card` plus the push (and the Trainer's settings, when known).

    `lineage`: ids the evaluator could not know while it ran (its own outputs are
    registered in MLMD after it returns); they fill the card's empty lineage entries."""
    known = {k: v for k, v in (lineage or {}).items() if v is not None}
    out = dict(card, push={"version": os.path.basename(destination.rstrip("/")), "destination": destination,
                           "pushed_model_id": pushed_model_id, "pipeline_run_id": run_id or None},
               lineage={**known, **{k: v for k, v in card.get("lineage", {}).items() if v is not None}})
    if train_config is not None:
        out["model"] = dict(card["model"], train_config=train_config)
    return out


def _metric_rows(metrics: Dict[str, Dict[str, Any]]):
    for task, values in sorted((metrics or {}).items()):
        for name, value in sorted((values or {}).items()):
            shown = f"{value:.4f}" if isinstance(value, float) else ("n/a" if value is None else str(value))
            yield f"| {task} | {name} | {shown} |"


def to_markdown(card: Dict[str, Any]) -> str:
    """The card for people: the same facts as the JSON, as a page."""
    model, data, blessing = card["model"], card["data"], card.get("blessing") or {}
    push = card.get("push")
    title = f"version {push['version']}" if push else os.path.basename(model["uri"].rstrip("/"))
    lines = [f"# Model card: pix2seq {title}", ""]
    verdict = "BLESSED" if blessing.get("blessed") else "NOT BLESSED"
    lines += [f"**{verdict}**" + (f": {'; '.join(blessing['reasons'])}" if blessing.get("reasons") else ""), ""]
    lines += ["## Model", "", f"- artifact: `{model['uri']}` (MLMD id {model['artifact_id']})",
              f"- SavedModel: `{model['saved_model']}`"]
    if push:
        lines.append(f"- pushed to `{push['destination']}` (pushed model id {push['pushed_model_id']}, "
                     f"run `{push['pipeline_run_id']}`)")
    lines += ["", "## Data", "", f"- examples: `{data['examples_uri']}` (MLMD id {data['examples_id']})",
              f"- evaluated on split `{data['eval_split']}`: {data['num_images']} images",
              f"- categories: {', '.join(c['name'] or str(c['id']) for c in data['categories']) or 'n/a'}",
              "", "## Metrics", "", "| task | metric | value |", "|---|---|---|", *_metric_rows(card["metrics"])]
    if card.get("baseline"):
        lines += ["", f"Baseline `{card['baseline']['uri']}`:", "", "| task | metric | value |", "|---|---|---|",
                  *_metric_rows(card["baseline"]["metrics"])]
    if blessing.get("checks"):
        lines += ["", "## Blessing checks", "", *(f"- {c}" for c in blessing["checks"])]
    lines += ["", "## Lineage (ML Metadata ids)", "", "| artifact | id |", "|---|---|",
              *(f"| {k} | {v} |" for k, v in card["lineage"].items())]
    for key, title_ in (("config", "Model configuration"), ("train_config", "Training configuration")):
        if model.get(key):
            lines += ["", f"## {title_}", "", "```json", json.dumps(model[key], indent=1, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def write(card: Dict[str, Any], json_path: str, markdown_path: str) -> None:
    """Write the card as JSON and Markdown (local paths or gs://)."""
    for path, text in ((json_path, json.dumps(card, indent=1, sort_keys=True)), (markdown_path, to_markdown(card))):
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)


def read(json_path: str) -> Optional[Dict[str, Any]]:
    """A card written by `write`, or None when there is none."""
    return _read_json(json_path)


def publish_next_to(card: Dict[str, Any], destination: str) -> str:
    """Write a pushed model's card as `<destination>.model_card.{json,md}`; returns the JSON path."""
    base = destination.rstrip("/") + "."
    write(card, base + JSON_FILE, base + MARKDOWN_FILE)
    return base + JSON_FILE
