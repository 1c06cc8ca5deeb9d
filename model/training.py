"""The one training function behind `pix2seq train` and the TFX Trainer's `run_fn`.

`train(model_config, train_config, out_dir, train_dataset_fn, ...)`:

1. picks the strategy (model/strategy.py) and the precision policy;
2. builds the model, AdamW and the metrics inside the strategy scope;
3. restores the newest checkpoint under `out_dir/checkpoints` if there is one —
   weights, optimizer slots and step, and the dropout random-generator states;
4. feeds `strategy.distribute_datasets_from_function`, asking the dataset factory
   for the stream *from the restored step* (`train_dataset_fn(input_context,
   start_step)`; batch sizes are global and split per replica by the factory);
5. runs `model.fit` with one Keras "epoch" per checkpoint interval, a progress bar,
   TensorBoard logs under `out_dir/tensorboard`, a checkpoint at each interval, and
   a guard that raises `NonFiniteLossError` as soon as the loss is NaN/inf;
6. writes `out_dir/model.weights.h5` and `out_dir/model_config.json`.

Why not Keras' `BackupAndRestore`: it restores weights, optimizer and epoch but not
the dropout RNG state and not the input position, so a resumed run would train on
different data and masks than an uninterrupted one. Here a resumed run equals the
uninterrupted run (tests/test_training.py).
"""
import dataclasses
import logging
import os

import keras
import numpy as np
import tensorflow as tf

import pix2seq  # noqa: F401  (Keras 3 guard)
from pix2seq import progress
from model import strategy as strategy_lib
from model.config import ModelConfig
from model.optimizer import build_optimizer
from model.pix2seq_model import CONFIG_FILE, WEIGHTS_FILE, Pix2SeqModel  # noqa: F401  (file names)
from model.train_config import TrainConfig  # noqa: F401  (the one config; train() takes it)

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the bad step is never checkpointed."""


@dataclasses.dataclass
class TrainResult:
    model: Pix2SeqModel
    history: dict
    initial_step: int
    strategy: tf.distribute.Strategy
    tasks: tuple = ()  # the trained tasks (weight > 0): what the export serves


class StepProgress(keras.callbacks.Callback):
    """Training progress over all steps (not per checkpoint interval): Keras' bar in a
    terminal, a line every 30 s otherwise (pix2seq/progress.py), with the running losses."""

    def __init__(self, steps: int, initial_step: int):
        super().__init__()
        self._steps, self._initial = steps, initial_step
        self._progress = None

    def on_train_begin(self, logs=None):
        self._progress = progress.Progress("train", self._steps, unit="step", start=self._initial)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self._progress.update(step, **{k: float(v) for k, v in sorted((logs or {}).items())})

    def on_epoch_end(self, epoch, logs=None):
        val = {k: round(float(v), 4) for k, v in sorted((logs or {}).items()) if k.startswith("val_")}
        if val:
            log.info("train: validation at step %d: %s", int(self.model.optimizer.iterations.numpy()), val)

    def on_train_end(self, logs=None):
        self._progress.close()


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` at the first batch whose loss is NaN/inf.

    (`keras.callbacks.TerminateOnNaN` only sets `stop_training`, which lets the
    epoch end - and a checkpoint be written - before stopping.)
    """

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            step = int(self.model.optimizer.iterations.numpy())
            tasks = ", ".join(f"{k}={float(v):.4g}" for k, v in logs.items() if k.endswith("_loss"))
            raise NonFiniteLossError(
                f"Non-finite training loss {float(loss)} at step {step} ({tasks}); stopped before "
                "checkpointing. Check the input batch, lower the learning rate or enable clipping."
            )


class IntervalCheckpoint(keras.callbacks.Callback):
    """Saves the full training state (see `training_checkpoint`) at each epoch end."""

    def __init__(self, manager):
        super().__init__()
        self.manager = manager

    def on_epoch_end(self, epoch, logs=None):
        path = self.manager.save(checkpoint_number=int(self.model.optimizer.iterations.numpy()))
        log.info("checkpoint %s", path)


def training_checkpoint(model):
    """A tf.train.Checkpoint of every model variable (incl. RNG states) and optimizer variable."""
    return tf.train.Checkpoint(
        model_variables=list(model.variables), optimizer_variables=list(model.optimizer.variables)
    )


def build_model(model_config, train_config):
    """Model + AdamW, compiled and built (call inside the strategy scope)."""
    model = Pix2SeqModel(
        model_config, task_weights=train_config.active_task_weights, global_clipnorm=train_config.clipnorm
    )
    model.build()
    optimizer = build_optimizer(
        model,
        train_config.learning_rate,
        train_config.steps,
        train_config.warmup,
        weight_decay=train_config.weight_decay,
        end_fraction=train_config.end_fraction,
    )
    model.compile(
        optimizer=optimizer,
        jit_compile=train_config.jit_compile,
        steps_per_execution=train_config.steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)
    return model


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir,
    train_dataset_fn,
    eval_dataset_fn=None,
    strategy=None,
    verbose="auto",
    callbacks=(),
    initialize=None,
):
    """Trains (or resumes) to `train_config.steps`; returns a `TrainResult`.

    Args:
      train_dataset_fn: `(input_context, start_step) -> tf.data.Dataset` of endless
        per-replica training elements (batch-mixing dicts or data-mixing batches),
        positioned at `start_step`.
      eval_dataset_fn: `input_context -> tf.data.Dataset` (repeated) or None.
      strategy: a tf.distribute.Strategy; None to create one from `train_config`.
      verbose: "auto" shows `StepProgress`; 0, 1, 2 are Keras' own per-epoch modes.
      callbacks: extra Keras callbacks.
      initialize: `model -> None`, run on a fresh start only (not when resuming), e.g. a
        warm start from other weights (model/warm_start.py).
    """
    tf.io.gfile.makedirs(out_dir)
    if strategy is None:
        strategy = strategy_lib.create_strategy(train_config.tpu, train_config.devices)
    strategy_lib.apply_precision(strategy, train_config.precision)
    keras.utils.set_random_seed(train_config.seed)
    with strategy.scope():
        model = build_model(model_config, train_config)
    manager = tf.train.CheckpointManager(
        training_checkpoint(model), os.path.join(out_dir, "checkpoints"), max_to_keep=train_config.keep_checkpoints
    )
    if manager.latest_checkpoint:
        manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log.info("resumed from %s", manager.latest_checkpoint)
    elif initialize is not None:
        initialize(model)
    initial_step = int(model.optimizer.iterations.numpy())
    interval = train_config.interval
    if initial_step % interval:
        raise ValueError(
            f"Checkpoint at step {initial_step} is not on the checkpoint interval {interval}; "
            "resume with the checkpoint_every the run was started with"
        )
    history = {}
    if initial_step < train_config.steps:
        train_ds = strategy.distribute_datasets_from_function(lambda ctx: train_dataset_fn(ctx, initial_step))
        eval_ds = None
        if eval_dataset_fn is not None and train_config.eval_steps > 0:
            eval_ds = strategy.distribute_datasets_from_function(eval_dataset_fn)
        all_callbacks = [
            NonFiniteLossGuard(),
            IntervalCheckpoint(manager),
            keras.callbacks.TensorBoard(
                os.path.join(out_dir, "tensorboard"), update_freq=train_config.tensorboard_every
            ),
            *callbacks,
        ]
        if verbose == "auto":
            all_callbacks.append(StepProgress(train_config.steps, initial_step))
            verbose = 0
        fit = model.fit(
            train_ds,
            epochs=train_config.steps // interval,
            initial_epoch=initial_step // interval,
            steps_per_epoch=interval,
            validation_data=eval_ds,
            validation_steps=train_config.eval_steps if eval_ds is not None else None,
            callbacks=all_callbacks,
            verbose=verbose,
        )
        history = fit.history
    save_model(model, out_dir)
    return TrainResult(model=model, history=history, initial_step=initial_step, strategy=strategy,
                       tasks=train_config.tasks)


def save_model(model, out_dir):
    """`model.weights.h5` + `model_config.json`: what `load_model` needs (`save_to_preset`)."""
    model.save_to_preset(out_dir)


def load_model(out_dir):
    """The trained model `save_model` wrote (weights only, no optimizer)."""
    return Pix2SeqModel.from_preset(out_dir)
