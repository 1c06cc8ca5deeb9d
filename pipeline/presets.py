"""Pipeline configurations as frozen dataclasses, chosen by name.

`micro` is for the end-to-end test (a handful of images, a few steps), `demo`
is what `make demo` runs on 2 CPU cores in minutes (a fine-tuning of the shipped
pretrained checkpoint), `demo-scratch` the same model trained from random weights,
`coco` is the paper's setting on COCO 2017 (TPU training, Dataflow ingestion).
`get(name, **changes)` returns a copy with top-level fields replaced; nothing
here parses strings. `train` is the one training configuration
(model/train_config.py) that the Trainer's run_fn and `pix2seq train --preset`
read too.

Tasks follow the data: the Trainer drops a weighted task the ingested data cannot feed
(unless `TrainConfig.required_tasks` names it: then it is an error), the export serves
the trained tasks, and the evaluator scores those (`EvalConfig.tasks` empty). So any
preset runs on a detection-only dataset as it is.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Tuple

from model.train_config import TrainConfig

# The demo's model: what `make demo` trains and the pretrained checkpoint it starts from has.
DEMO_MODEL_OVERRIDES = {"num_bins": 64, "dropout": 0.0, "drop_path": 0.0, "stem": "conv", "object_order": "area",
                        "coordinate_init": "sincos"}
# Relative to the working directory, like the demo's data (`make demo` runs in the repository root).
DEMO_CHECKPOINT = "pretrained/demo_tiny"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """CocoEvaluator settings and the blessing rule.

    `tasks`: the tasks to score; empty (the default) scores every task the model serves
    (the Trainer trained the tasks the data feeds) that the eval data has ground truth
    for. Naming a task the data cannot feed or the model does not serve fails the
    evaluator with a message naming what is missing. Thresholds of tasks not scored do
    not apply.
    """

    tasks: Tuple[str, ...] = ()
    # {task: {metric: minimum}}; e.g. {"detection": {"AP50": 0.5}}
    thresholds: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    # allowed drop of a task's headline metric vs the latest blessed model
    baseline_margin: float = 0.01
    batch_size: int = 8
    max_examples: int = 0  # 0: the whole eval split
    num_pictures: int = 4
    picture_min_score: float = 0.3  # detections drawn in the pictures (all of them count for AP)
    keypoint_category_ids: Tuple[int, ...] = (1,)
    score_threshold: float = 0.0  # detections below it are not reported (COCO AP wants all)
    # detect_and_describe_with_options inputs (max_objects, temperature, top_p, num_samples,
    # seed); empty: the exported model's paper defaults
    decoding: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        d = dataclasses.asdict(self)
        d["thresholds"] = {t: dict(m) for t, m in self.thresholds.items()}
        d["decoding"] = dict(self.decoding)
        d["tasks"] = list(self.tasks)
        d["keypoint_category_ids"] = list(self.keypoint_category_ids)
        return d


@dataclasses.dataclass(frozen=True)
class VertexConfig:
    """Where the compiled pipeline runs on Google Cloud (used by runner_vertex)."""

    project: str = ""
    region: str = "us-central1"
    # Trainer on Vertex AI training: "" keeps training inside the pipeline step;
    # "tpu" uses a Cloud TPU worker (TPUStrategy), "gpu" an accelerator VM.
    training: str = ""
    tpu_type: str = "TPU_V3"
    tpu_cores: int = 8
    gpu_type: str = "NVIDIA_TESLA_V100"
    gpu_count: int = 1
    machine_type: str = "n1-highmem-16"
    service_account: str = ""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    name: str
    coco_dir: str
    pipeline_root: str
    serving_dir: str
    metadata_path: str
    train: TrainConfig
    eval: EvalConfig
    caption_vocab_size: int = 1000
    max_error_fraction: float = 0.01
    beam_pipeline_args: Tuple[str, ...] = ("--direct_running_mode=multi_processing",
                                          "--direct_num_workers=0")
    enable_cache: bool = True
    output_dir: str = "demo_output"  # where the CLI copies the prediction pictures
    vertex: VertexConfig = dataclasses.field(default_factory=VertexConfig)

    def replace(self, **changes) -> "PipelineConfig":
        return dataclasses.replace(self, **changes)


def _micro() -> PipelineConfig:
    return PipelineConfig(
        name="pix2seq-micro",
        coco_dir="demo_data/micro",
        pipeline_root="pipeline_root/micro",
        serving_dir="serving_models/micro",
        metadata_path="pipeline_root/micro/metadata.sqlite",
        # the demo's model options, so the end-to-end test covers them (export, serving, eval),
        # on one encoder and one decoder block: the pipeline is under test, not the model, and
        # graph tracing (most of a 3-step Trainer) grows with the blocks. No validation steps.
        train=TrainConfig(steps=3, batch_size=2, warmup_steps=1,
                          model_overrides={"stem": "conv", "object_order": "area", "coordinate_init": "sincos",
                                           "encoder_depth": 1, "decoder_depth": 1},
                          task_batch_sizes={"detection": 2, "segmentation": 1, "keypoints": 1,
                                            "captioning": 1}),
        eval=EvalConfig(batch_size=4, num_pictures=2, thresholds={}, baseline_margin=1.0),
        caption_vocab_size=64,
        beam_pipeline_args=("--direct_num_workers=1",),
        output_dir="demo_output/micro",
    )


def _demo_scratch() -> PipelineConfig:
    # `make demo SCRATCH=1`: the demo trained from random weights. Tuned for 2 CPU cores in
    # ~15 minutes (BENCHMARKS.md "make demo" has the ablation).
    # Detection gets most of the batch (16 images per step against 2 for each other task)
    # and of the loss; no dropout for a short run. What made a from-scratch `tiny` model
    # localize within ~2k steps: a conv stem instead of the single patch projection,
    # objects ordered largest first instead of at random, sine-cosine-initialized
    # coordinate embeddings, and 64 coordinate bins (2 canvas pixels each) instead of 1000.
    weights = {"detection": 0.7, "segmentation": 0.1, "keypoints": 0.1, "captioning": 0.1}
    return PipelineConfig(
        name="pix2seq-demo-scratch",
        coco_dir="demo_data/synth",
        pipeline_root="pipeline_root/demo-scratch",
        serving_dir="serving_models/demo-scratch",
        metadata_path="pipeline_root/demo-scratch/metadata.sqlite",
        train=TrainConfig(steps=1800, eval_steps=0, batch_size=16, learning_rate=2e-3,
                          warmup_steps=50, task_weights=weights, checkpoint_every=600,
                          model_overrides=DEMO_MODEL_OVERRIDES,
                          task_batch_sizes={"detection": 16, "segmentation": 2, "keypoints": 2,
                                            "captioning": 2}),
        # Gates for this tiny CPU model: clearly above an untrained model's scores
        # (AP50 ~0.001, CIDEr-D ~0.05), far below what a real training run reaches.
        eval=EvalConfig(batch_size=16, num_pictures=6, picture_min_score=0.15,
                        thresholds={"detection": {"AP50": 0.005}, "captioning": {"CIDEr-D": 0.1}},
                        baseline_margin=0.02),
        caption_vocab_size=200,
        beam_pipeline_args=("--direct_running_mode=multi_processing", "--direct_num_workers=2"),
        output_dir="demo_output/scratch",
    )


def _demo() -> PipelineConfig:
    # What `make demo` runs: the `demo-scratch` training (same model, steps, batches, weights and
    # gates, so the same ~15 minutes) started from the pretrained checkpoint shipped in the
    # repository (pretrained/demo_tiny, made by `make pretrain-demo` = bench/pretrain_demo.py from
    # synthetic data disjoint from the demo's) instead of random weights.
    scratch = _demo_scratch()
    return scratch.replace(
        name="pix2seq-demo",
        pipeline_root="pipeline_root/demo",
        serving_dir="serving_models/demo",
        metadata_path="pipeline_root/demo/metadata.sqlite",
        train=scratch.train.replace(init_checkpoint=DEMO_CHECKPOINT),
        output_dir="demo_output",
    )


def _coco() -> PipelineConfig:
    return PipelineConfig(
        name="pix2seq-coco",
        coco_dir="gs://YOUR_BUCKET/coco2017",
        pipeline_root="gs://YOUR_BUCKET/pix2seq/pipeline_root",
        serving_dir="gs://YOUR_BUCKET/pix2seq/serving",
        metadata_path="pipeline_root/coco/metadata.sqlite",
        train=TrainConfig(model_preset="base", steps=300_000, eval_steps=100, batch_size=128,
                          learning_rate=1e-4, warmup_steps=10_000),
        eval=EvalConfig(batch_size=32, num_pictures=8,
                        thresholds={"detection": {"AP": 0.40}, "segmentation": {"AP": 0.30},
                                    "keypoints": {"AP": 0.50}, "captioning": {"CIDEr-D": 0.9}},
                        baseline_margin=0.005),
        caption_vocab_size=32000,
        beam_pipeline_args=("--runner=DataflowRunner", "--project=YOUR_PROJECT",
                            "--region=us-central1", "--temp_location=gs://YOUR_BUCKET/tmp",
                            "--experiments=use_runner_v2"),
        vertex=VertexConfig(training="tpu"),
    )


def _coco_finetune() -> PipelineConfig:
    # The official detection fine-tuning recipe (configs/config_det_finetune.py; docs/OFFICIAL_CHECKPOINTS.md)
    # from a released checkpoint converted with `pix2seq import-checkpoint --config det-vit-b-640`:
    # learning rate 3e-5, batch 32, 40 COCO epochs (118k images: ~148k steps), 2 epochs of warm-up,
    # no gradient clipping. The architecture comes from the checkpoint (TrainConfig.init_checkpoint).
    coco = _coco()
    return coco.replace(
        name="pix2seq-coco-finetune",
        pipeline_root="gs://YOUR_BUCKET/pix2seq/finetune_root",
        metadata_path="pipeline_root/coco-finetune/metadata.sqlite",
        train=TrainConfig(init_checkpoint="gs://YOUR_BUCKET/pix2seq/imported/det-vit-b-640",
                          steps=148_000, eval_steps=100, batch_size=32, learning_rate=3e-5,
                          warmup_steps=7_400, clipnorm=None, task_weights={"detection": 1.0}),
        eval=dataclasses.replace(coco.eval, tasks=("detection",), thresholds={"detection": {"AP": 0.45}}),
    )


PRESETS = {"micro": _micro, "demo": _demo, "demo-scratch": _demo_scratch, "coco": _coco,
           "coco-finetune": _coco_finetune}


def get(name: str, **changes) -> PipelineConfig:
    """The named pipeline preset, with top-level fields replaced by `changes`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown pipeline preset {name!r}; expected one of {tuple(PRESETS)}")
    config = PRESETS[name]()
    return config.replace(**changes) if changes else config


__all__ = ["PipelineConfig", "TrainConfig", "EvalConfig", "VertexConfig", "PRESETS", "get"]
