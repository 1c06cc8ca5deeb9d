"""`train_on_examples`: the one call behind `pix2seq train` and the TFX `run_fn` (whose
Examples artifact is the directory layout model/datasets.py reads).
"""
import logging

import pix2seq  # noqa: F401  (Keras 3 guard)
from data import dataset_info as data_info
from model.datasets import (  # noqa: F401  (the Examples-directory readers callers use from here)
    caption_model_file, eval_dataset_fn, examples_root, model_config_for, split_pattern, task_weights_for,
    train_dataset_fn)
from model import tf_threads
from model.training import train

log = logging.getLogger(__name__)


def train_on_examples(config, examples_dir, out_dir, train_files=None, eval_files=None, verbose="auto",
                      callbacks=()):
    """Trains `config` (a model.train_config.TrainConfig) on an ingested Examples directory.

    Tasks follow the data: a task the dataset cannot feed (dataset_info.json `tasks`) is
    dropped from the config's weights, unless it is in `config.required_tasks` (asked
    for by the user or the preset), which is a `DatasetError` naming what is missing.
    `train_files` / `eval_files`: shard lists or globs (default: the directory's splits).
    `callbacks`: extra Keras callbacks. Returns training.train's TrainResult.
    """
    tf_threads.configure(config.inter_op_threads)
    weights = task_weights_for(examples_dir, config.active_task_weights, config.required_tasks)
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
