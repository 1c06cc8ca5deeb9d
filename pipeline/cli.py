"""`pix2seq pipeline run|compile`.

run:     the whole TFX pipeline here (LocalDagRunner, SQLite MLMD), then a table of
         per-task metrics, the blessing, the pushed model, time per component and
         where the prediction pictures are.
compile: a Vertex AI Pipelines / Kubeflow Pipelines v2 JSON for a container image,
         optionally submitted to Vertex AI.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from typing import List, Optional

from components.coco_metrics import metrics_table
from pipeline import presets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pipeline_command", metavar="{run,compile}", required=True)
    run = sub.add_parser("run", help="run the pipeline locally (LocalDagRunner + SQLite ML Metadata)")
    _common(run)
    run.add_argument("--pipeline-root", help="artifact root (default: the preset's)")
    run.add_argument("--serving-dir", help="Pusher destination (default: the preset's)")
    run.add_argument("--output-dir", help="where to copy the prediction pictures (default: the preset's)")
    run.add_argument("--train-steps", type=int, help="override the preset's training steps")
    run.add_argument("--no-cache", action="store_true", help="rerun every component")

    comp = sub.add_parser("compile", help="compile for Vertex AI Pipelines or Kubeflow Pipelines v2")
    _common(comp, default_preset="coco")
    comp.add_argument("--target", choices=("vertex", "kubeflow"), default="vertex")
    comp.add_argument("--image", required=True, help="pipeline container image (see Dockerfile)")
    comp.add_argument("--out", required=True, help="output JSON file")
    comp.add_argument("--pipeline-root", help="artifact root, e.g. gs://bucket/pix2seq/root")
    comp.add_argument("--serving-dir", help="Pusher destination, e.g. gs://bucket/pix2seq/serving")
    comp.add_argument("--project", help="Google Cloud project (Vertex training, submission)")
    comp.add_argument("--region", help="Vertex AI region")
    comp.add_argument("--training", choices=("tpu", "gpu", "none"),
                      help="Trainer on a Vertex AI training job (tpu/gpu) or inside the step (none)")
    comp.add_argument("--beam-arg", action="append", default=None,
                      help="Beam pipeline arg (repeatable); replaces the preset's, e.g. --beam-arg=--runner=DataflowRunner")
    comp.add_argument("--submit", action="store_true", help="submit the compiled job to Vertex AI")


def _common(parser, default_preset="demo"):
    parser.add_argument("--preset", default=default_preset, choices=sorted(presets.PRESETS))
    parser.add_argument("--coco-dir", help="COCO-format directory (default: the preset's)")


def _config(args):
    config = presets.get(args.preset)
    changes = {}
    for flag, field in (("coco_dir", "coco_dir"), ("pipeline_root", "pipeline_root"),
                        ("serving_dir", "serving_dir"), ("output_dir", "output_dir")):
        value = getattr(args, flag, None)
        if value:
            changes[field] = value
    if getattr(args, "pipeline_root", None):
        changes["metadata_path"] = os.path.join(args.pipeline_root, "metadata.sqlite")
    if getattr(args, "train_steps", None):
        changes["train"] = dataclasses.replace(config.train, steps=args.train_steps)
    if getattr(args, "no_cache", False):
        changes["enable_cache"] = False
    if getattr(args, "beam_arg", None):
        changes["beam_pipeline_args"] = tuple(args.beam_arg)
    vertex = {}
    if getattr(args, "project", None):
        vertex["project"] = args.project
    if getattr(args, "region", None):
        vertex["region"] = args.region
    if getattr(args, "training", None):
        vertex["training"] = "" if args.training == "none" else args.training
    if vertex:
        changes["vertex"] = dataclasses.replace(config.vertex, **vertex)
    return config.replace(**changes) if changes else config


def _short(fingerprint: str) -> str:
    """'N files, B bytes, sha256:<64 hex>' -> the same with 12 hex digits."""
    head, sep, digest = fingerprint.rpartition("sha256:")
    return f"{head}{sep}{digest[:12]}" if sep else fingerprint


def format_table(summary) -> str:
    """The end-of-run report: metrics, blessing, push, time per component, pictures."""
    lines: List[str] = []
    metrics = (summary.metrics or {}).get("candidate") or {}
    lines.append(f"pipeline {summary.pipeline_name}  run {summary.run_id}")
    lines.append("")
    lines.extend(metrics_table(metrics))
    baseline = (summary.metrics or {}).get("baseline")
    if baseline:
        lines.append(f"(baseline: {(summary.metrics or {}).get('baseline_model', 'latest blessed model')})")
    lines.append("")
    verdict = {True: "BLESSED", False: "NOT BLESSED", None: "not evaluated"}[summary.blessed]
    lines.append(f"blessing: {verdict}" + (f" ({summary.blessing_message})" if summary.blessing_message else ""))
    if summary.pushed and summary.already_served:
        lines.append(f"pushed model: {summary.pushed_destination} (already served: same model, no new version)")
    elif summary.pushed:
        lines.append(f"pushed model: {summary.pushed_destination}")
        if summary.model_card:
            lines.append(f"model card: {summary.model_card} (Markdown beside it)")
    else:
        lines.append("pushed model: none (not blessed)")
    lines.append("")
    from pipeline.pipeline import EXAMPLE_GEN, TRAINER

    states = {c.component: c.state for c in summary.components}
    for label, value, node in (("input fingerprint", summary.input_fingerprint, EXAMPLE_GEN),
                               ("code fingerprint", summary.code_fingerprint, TRAINER)):
        if value:
            reused = " (unchanged: cached)" if states.get(node) == "CACHED" else ""
            lines.append(f"{label}: {_short(value)}{reused}")
    lines.append("")
    lines.append(f"{'component':<32}{'state':<10}{'seconds':>9}")
    total = 0.0
    for c in summary.components:
        lines.append(f"{c.component:<32}{c.state:<10}{c.seconds:>9.1f}")
        total += c.seconds
    lines.append(f"{'total':<32}{'':<10}{total:>9.1f}")
    return "\n".join(lines)


def copy_pictures(summary, output_dir: str) -> Optional[str]:
    """Copies the evaluation's prediction pictures into `output_dir`; returns it (None if none)."""
    pictures = summary.pictures
    if not pictures:
        return None
    os.makedirs(output_dir, exist_ok=True)
    for path in pictures:
        shutil.copy(path, os.path.join(output_dir, os.path.basename(path)))
    return os.path.abspath(output_dir)


def main(args) -> int:
    config = _config(args)
    if args.pipeline_command == "run":
        from pipeline import runner_local

        summary = runner_local.run(config)
        print(format_table(summary))
        where = copy_pictures(summary, config.output_dir)
        if where:
            print(f"\nprediction pictures: {where}  (originals in {summary.evaluation_uri}/pictures)")
        print(f"metrics: {summary.evaluation_uri}/metrics.json")
        return 0 if summary.blessed is not None else 1

    from pipeline import runner_vertex

    path = runner_vertex.compile_pipeline(config, args.target, args.image, args.out)
    print(f"compiled {args.target} pipeline: {path}")
    if args.submit:
        if args.target != "vertex":
            print("error: --submit sends to Vertex AI; for Kubeflow upload the spec with the KFP UI or "
                  "`kfp.Client().create_run_from_pipeline_package`", file=sys.stderr)
            return 2
        print(f"submitted: {runner_vertex.submit(path, config)}")
    return 0
