"""Ingested examples -> the dataset factories and model config `model/training.py` takes.

`train_on_examples` is the one call behind `pix2seq train` and the TFX `run_fn`
(whose Examples artifact is the same directory layout: `Split-train/*.gz`,
`Split-eval/*.gz`, `dataset_info.json`, `caption_spm.model`).
"""
import json
import logging
import os

import tensorflow as tf

import pix2seq  # noqa: F401  (Keras 3 guard)
from data import dataset_info as data_info
from data import pipelines
from model import tf_threads
from model.config import preset
from model.training import train

log = logging.getLogger(__name__)

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
    map (a dense map sets the class range to its size), the keypoint class and schema.
    Empty for data ingested before these were recorded."""
    fields = {}
    class_ids = tuple(info.get("class_category_ids") or ())
    if class_ids:
        fields.update(class_category_ids=class_ids, max_class_id=len(class_ids))
    schema = info.get("keypoint_schema")
    if schema:
        fields.update(person_class_id=data_info.class_index(class_ids)(schema["category_id"]),
                      num_keypoints=int(schema["num_keypoints"]),
                      keypoint_flip_pairs=tuple(tuple(p) for p in schema["flip_pairs"]))
    return fields


def dataset_tasks(info):
    """The tasks the ingested data supports (every task for data ingested before
    ingestion recorded them)."""
    return list(info.get("tasks") or pipelines.TASK_NAMES)


def task_weights_for(examples_dir, weights, explicit=()):
    """`weights` (task -> weight) kept for the tasks the data supports: a task left at
    its default is dropped when the data cannot feed it, a task in `explicit` with
    weight > 0 that the data cannot feed is a `DatasetError` naming what is missing."""
    supported = dataset_tasks(dataset_info(examples_dir))
    data_info.check_tasks([t for t in explicit if weights.get(t, 0) > 0], supported, examples_dir)
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


def train_dataset_fn(files, token_config, batch_size, task_weights, mixing="batch", seed=0):
    """`(input_context, start_step) -> dataset` for `training.train`.

    mixing="batch": `{task: batch}` for every task with weight > 0 (the paper's batch
    mixing); "data": one batch sampling tasks by weight, with `task_id`. Resuming at
    `start_step` skips the elements already consumed (the streams are deterministic),
    so a resumed run sees exactly the data of an uninterrupted one.
    """
    tasks = [t for t in pipelines.TASK_NAMES if task_weights.get(t, 0) > 0]
    if mixing not in ("batch", "data"):
        raise ValueError(f"mixing must be 'batch' or 'data'. Received: {mixing!r}")

    def dataset_fn(input_context, start_step):
        if mixing == "batch":
            ds = pipelines.batch_mixing_dataset(files, tasks, token_config, batch_size, seed, input_context=input_context)
        else:
            ds = pipelines.data_mixing_dataset(
                files, dict(task_weights), token_config, batch_size, seed, input_context=input_context
            )
        return ds.skip(start_step * _replicas_per_pipeline(input_context)) if start_step else ds

    return dataset_fn


def eval_dataset_fn(files, token_config, batch_size, tasks):
    """`input_context -> dataset` of `{task: batch}` from the eval split (repeated, never augmented).

    The last partial batch is kept, so an eval split smaller than one batch still
    evaluates (shapes are then dynamic: fine on CPU/GPU, not for TPU evaluation).
    """

    def dataset_fn(input_context):
        streams = {
            t: pipelines.eval_dataset(
                files, t, token_config, batch_size, drop_remainder=False, input_context=input_context
            ).repeat()
            for t in tasks
        }
        return tf.data.Dataset.zip(streams)

    return dataset_fn


def train_on_examples(config, examples_dir, out_dir, train_files=None, eval_files=None, verbose="auto",
                      explicit_tasks=(), callbacks=()):
    """Trains `config` (a model.train_config.TrainConfig) on an ingested Examples directory.

    Tasks follow the data: a task the dataset cannot feed (dataset_info.json `tasks`) is
    dropped from the config's weights, unless it is in `explicit_tasks` (asked for by the
    user), which is a `DatasetError` naming what is missing.
    `train_files` / `eval_files`: shard lists or globs (default: the directory's splits).
    `callbacks`: extra Keras callbacks. Returns training.train's TrainResult.
    """
    tf_threads.configure(config.inter_op_threads)
    weights = task_weights_for(examples_dir, config.active_task_weights, explicit_tasks)
    if not weights:
        raise data_info.DatasetError(f"{examples_dir}: the data feeds none of the tasks {config.tasks}")
    config = config.replace(task_weights=weights,
                            task_batch_sizes={t: b for t, b in config.task_batch_sizes.items() if t in weights})
    initialize = None
    if config.init_checkpoint:
        from model import warm_start

        source = warm_start.source_config(config.init_checkpoint)
        model_config = model_config_for(source, examples_dir, **config.model_overrides)

        def initialize(model):
            report = warm_start.warm_start(model, config.init_checkpoint, caption_model_file(examples_dir))
            log.info("%s", report.summary())
    else:
        model_config = model_config_for(config.model_preset, examples_dir, **config.model_overrides)
    weights = config.active_task_weights
    train_files = train_files or split_pattern(examples_dir, "train")
    eval_files = eval_files or split_pattern(examples_dir, "eval")
    return train(
        model_config,
        config,
        out_dir,
        train_dataset_fn(train_files, model_config.tokens, config.train_batch_size, weights, config.mixing,
                         config.seed),
        eval_dataset_fn(eval_files, model_config.tokens, config.batch_size, list(weights))
        if config.eval_steps else None,
        verbose=verbose,
        callbacks=callbacks,
        initialize=initialize,
    )
