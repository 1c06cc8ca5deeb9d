"""`pix2seq pipeline run|compile`.

run:     the whole TFX pipeline here (LocalDagRunner, SQLite MLMD), then a table of
         per-task metrics, the blessing, the pushed model, time per component and
         where the prediction pictures are (pipeline/report.py formats it).
compile: a Vertex AI Pipelines / Kubeflow Pipelines v2 JSON for a container image,
         optionally submitted to Vertex AI.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from pipeline import report
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


def main(args) -> int:
    config = _config(args)
    if args.pipeline_command == "run":
        from pipeline import runner_local

        summary = runner_local.run(config)
        print(report.format_table(summary))
        where = report.copy_pictures(summary, config.output_dir)
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
