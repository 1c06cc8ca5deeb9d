"""Ingested Examples -> model config and `tf.data` datasets, for `model.fit` and training.

An Examples directory (what `pix2seq ingest`, `components.beam_ingest.ingest` and the
TFX CocoExampleGen write): `Split-train/*.gz`, `Split-eval/*.gz`, `dataset_info.json`,
`caption_spm.model`. `examples_dataset(examples_dir, model, ...)` is the Keras way to
feed `fit`; `train_dataset_fn` / `eval_dataset_fn` are the factories behind it and
behind `model/train_data.train_on_examples` (`pix2seq train`, the TFX Trainer).
"""
import json
import os

import tensorflow as tf

import pix2seq  # noqa: F401  (Keras 3 guard)
from data import augment as augment_lib
from data import dataset_info as data_info
from model import input_pipelines as pipelines
from model.config import preset
from model.train_config import PAPER_TASK_WEIGHTS
from model.tasks import check_tasks

DATASET_INFO = "dataset_info.json"
CAPTION_MODEL = "caption_spm.model"


def split_pattern(examples_dir, split):
    return os.path.join(examples_dir, f"Split-{split}", "*")


def examples_root(file_pattern):
    """`.../Split-train/*` (a TFX `fn_args.train_files` entry) -> the Examples directory."""
    return os.path.dirname(os.path.dirname(file_pattern.rstrip("/")))


def dataset_info(examples_dir):
    path = os.path.join(examples_dir, DATASET_INFO)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} is missing: {examples_dir} is not an ingested Examples directory")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def caption_model_file(examples_dir):
    """The SentencePiece model ingestion trained, or None when there were no captions."""
    path = os.path.join(examples_dir, CAPTION_MODEL)
    return path if tf.io.gfile.exists(path) else None


def dataset_token_fields(info):
    """TokenConfig fields the ingested data decides (data/dataset_info.py): the class
    map (a dense map sets the class range to its size), the declared classes (what
    inference may report), the keypoint class and schema. Empty for data ingested
    before these were recorded."""
    fields = {}
    class_ids = tuple(info.get("class_category_ids") or ())
    if class_ids:
        fields.update(class_category_ids=class_ids, max_class_id=len(class_ids))
    declared = data_info.declared_classes(class_ids, info.get("category_ids"))
    if declared:
        fields.update(declared_classes=declared)
    schema = info.get("keypoint_schema")
    if schema:
        fields.update(person_class_id=data_info.class_index(class_ids)(schema["category_id"]),
                      num_keypoints=int(schema["num_keypoints"]),
                      keypoint_flip_pairs=tuple(tuple(p) for p in schema["flip_pairs"]))
    return fields


def dataset_tasks(info):
    """The tasks the ingested data supports (every task for data ingested before
    ingestion recorded them)."""
    return list(info.get("tasks") or pipelines.task_names())


def task_weights_for(examples_dir, weights, explicit=()):
    """`weights` (task -> weight) kept for the tasks the data supports: a task left at
    its default is dropped when the data cannot feed it, a task in `explicit` with
    weight > 0 that the data cannot feed is a `DatasetError` naming what is missing."""
    supported = dataset_tasks(dataset_info(examples_dir))
    check_tasks([t for t in explicit if weights.get(t, 0) > 0], supported, examples_dir)
    return {t: w for t, w in weights.items() if w > 0 and t in supported}


def model_config_for(preset_name, examples_dir, **overrides):
    """The preset (a name, or a `ModelConfig` such as a warm-start source's) with the
    caption vocabulary size ingestion actually built and the dataset's class map and
    keypoint schema (`dataset_token_fields`)."""
    info = dataset_info(examples_dir)
    changes = dict(overrides)
    if info.get("caption_vocab_size"):
        changes.setdefault("caption_vocab_size", int(info["caption_vocab_size"]))
    for key, value in dataset_token_fields(info).items():
        changes.setdefault(key, value)
    if isinstance(preset_name, str):
        return preset(preset_name, **changes)
    return preset_name.replace(**changes) if changes else preset_name


def _replicas_per_pipeline(input_context):
    if input_context is None:
        return 1
    return input_context.num_replicas_in_sync // input_context.num_input_pipelines


def train_dataset_fn(files, token_config, batch_size, task_weights, mixing="batch", seed=0,
                     augment_config=augment_lib.AugmentConfig()):
    """`(input_context, start_step) -> dataset` for `training.train`.

    mixing="batch": `{task: batch}` for every task with weight > 0 (the paper's batch
    mixing); "data": one batch sampling tasks by weight, with `task_id`. The stream at
    `start_step` starts after the elements already consumed (the streams are
    deterministic), so a resumed run sees exactly the data of an uninterrupted one;
    batch mixing skips them undecoded (model/input_pipelines.py).
    """
    tasks = [t for t in pipelines.task_names() if task_weights.get(t, 0) > 0]
    if mixing not in ("batch", "data"):
        raise ValueError(f"mixing must be 'batch' or 'data'. Received: {mixing!r}")

    def dataset_fn(input_context, start_step):
        # A pipeline feeds its replicas round-robin: a step takes one batch per replica.
        start_batch = start_step * _replicas_per_pipeline(input_context)
        if mixing == "batch":
            return pipelines.batch_mixing_dataset(files, tasks, token_config, batch_size, seed, augment_config,
                                                  input_context=input_context, start_batch=start_batch)
        return pipelines.data_mixing_dataset(files, dict(task_weights), token_config, batch_size, seed,
                                             augment_config, input_context=input_context, start_batch=start_batch)

    return dataset_fn


def eval_dataset_fn(files, token_config, batch_size, tasks, repeat=True):
    """`input_context -> dataset` of `{task: batch}` from the eval split (never augmented),
    repeated, or with `repeat=False` one pass (ending with the shortest task's stream).

    The last partial batch is kept, so an eval split smaller than one batch still
    evaluates (shapes are then dynamic: fine on CPU/GPU, not for TPU evaluation).
    """

    def dataset_fn(input_context):
        streams = {
            t: pipelines.eval_dataset(
                files, t, token_config, batch_size, drop_remainder=False, input_context=input_context
            )
            for t in tasks
        }
        if repeat:
            streams = {t: ds.repeat() for t, ds in streams.items()}
        return tf.data.Dataset.zip(streams)

    return dataset_fn




# Augmentation off: no flip, no scale jitter (images keep the canvas size; keypoint crops
# stay 2x the person box). Sequence augmentation (noise boxes, object order) still applies.
NO_AUGMENTATION = augment_lib.AugmentConfig(scale_min=1.0, scale_max=1.0, flip_prob=0.0,
                                            keypoint_scale_min=1.0, keypoint_scale_max=1.0)


def examples_dataset(examples_dir, model, split="train", tasks=None, batch_size=8, mixing="batch",
                     augment=True, task_weights=None, seed=0):
    """The `tf.data.Dataset` `model.fit` takes, from an ingested Examples directory.

    Args:
      examples_dir: an Examples directory (module docstring). A raw COCO directory is
        ingested first with `components.beam_ingest.ingest` (the pipeline's Beam code).
      model: the `Pix2SeqModel` (or its `ModelConfig`) to feed: its token config decides
        the sequences, so build it for this data (`Pix2SeqModel.from_preset(...,
        examples=examples_dir)`).
      split: "train" (endless, shuffled, augmented: give `fit` `steps_per_epoch`) or
        "eval" (one deterministic pass of `{task: batch}`, for `validation_data`).
      tasks: tasks to feed; None: every task the data supports (dataset_info.json
        `tasks`). Naming a task the data cannot feed is a `DatasetError`.
      batch_size: per-task batch (batch mixing), the mixed batch (data mixing), or
        {task: batch} (batch mixing only).
      mixing: "batch" (every element `{task: batch}`, the paper's) or "data" (one batch
        of tasks sampled by weight, with `task_id`).
      augment: image augmentation (flip, scale jitter, crops) on the train split.
      task_weights: {task: weight} sampling weights for data mixing (default: the paper's
        loss weights); batch mixing weighs losses by the model's `task_weights`.
      seed: data order and augmentation seed.
    """
    config = getattr(model, "config", model)
    supported = dataset_tasks(dataset_info(examples_dir))
    if tasks is None:
        tasks = list(supported)
    check_tasks(list(tasks), supported, examples_dir)
    tasks = [t for t in pipelines.task_names() if t in tasks]
    if isinstance(batch_size, dict) and (mixing != "batch" or split != "train"):
        raise ValueError(f"per-task batch sizes need mixing='batch' and split='train'. Received: {batch_size}")
    files = split_pattern(examples_dir, split)
    if split == "eval":
        return eval_dataset_fn(files, config.tokens, batch_size, tasks, repeat=False)(None)
    if split != "train":
        raise ValueError(f"split must be 'train' or 'eval'. Received: {split!r}")
    weights = dict(PAPER_TASK_WEIGHTS if task_weights is None else task_weights)
    weights = {t: weights.get(t, 0.0) if mixing == "data" else 1.0 for t in tasks}
    augment_config = augment_lib.AugmentConfig() if augment else NO_AUGMENTATION
    return train_dataset_fn(files, config.tokens, batch_size, weights, mixing, seed, augment_config)(None, 0)
