"""The Pix2Seq v2 network as a Keras model that trains with `model.fit`.

`Pix2SeqModel(config)`: ViT encoder -> image projection -> token decoder.
`encode(images)` gives the decoder memory; `model({"image", "input_tokens"})`
gives float32 logits. `train_step`/`test_step` take either

- a batch-mixing element `{task_name: {"image", "input_tokens", "target_tokens",
  "token_weights"}}` (one batch per task every step): the images of all tasks go
  through the encoder together, each task's tokens through the decoder, and the
  loss is `sum_t task_weights[t] * loss_t`; a task's tokens may be [B, K, L] (K
  sequences per image: each image's memory serves its K sequences); or
- a data-mixing element (one batch of mixed tasks padded to one length, plus
  `"task_id"` [B]): the loss is the token-weighted cross-entropy of the whole batch
  (tasks are weighted by how often they are sampled).

Either way the total `loss` and one `<task>_loss` per task are reported.

The Keras surface (docs/KERAS.md): `Pix2SeqModel.from_preset(name or directory,
**overrides)`, `save_to_preset(directory)` (`model.weights.h5` + `model_config.json`
+ the caption vocabulary: the layout `pix2seq train` writes), `.keras` files through
`model.save` / `keras.saving.load_model` (the caption vocabulary travels as an
asset), and `generate(images, task=...)` (model/generate.py).
"""
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from keras import ops

import pix2seq  # noqa: F401  (Keras 3 guard)
from model import datasets, generate as generate_lib, vocab
from model.config import PRESETS, ModelConfig, preset
from model.tasks import task_names
from model.decoder import Pix2SeqDecoder
from model.encoder import ImageProjection, VisionTransformer
from model.losses import global_sum, token_xent, weighted_xent_parts
from model.train_config import PAPER_TASK_WEIGHTS

WEIGHTS_FILE = "model.weights.h5"
CONFIG_FILE = "model_config.json"
CAPTION_MODEL = datasets.CAPTION_MODEL


@keras.saving.register_keras_serializable(package="pix2seq")
class Pix2SeqModel(keras.Model):
    """Encoder-decoder over one shared token vocabulary for all four tasks.

    Args:
      config: a `ModelConfig` (or its `to_dict()`).
      task_weights: loss weight per task for batch mixing; defaults to the paper's.
      global_clipnorm: clip the *global-batch* gradient to this norm (None: off).
        Done here rather than by the optimizer because Keras' optimizers clip each
        replica's partial gradient before the all-reduce.
    """

    def __init__(self, config, task_weights=None, global_clipnorm=None, **kwargs):
        super().__init__(**kwargs)
        self.global_clipnorm = global_clipnorm
        # SentencePiece model that turns caption tokens into text (generate, export); None: piece ids.
        self.caption_vocab_file = None
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        self.config = config
        weights = dict(PAPER_TASK_WEIGHTS if task_weights is None else task_weights)
        unknown = sorted(set(weights) - set(task_names()))
        if unknown:
            raise ValueError(f"task_weights has unknown tasks {unknown}; expected names from {task_names()}")
        self.task_weights = weights
        policy = self.dtype_policy
        self.encoder = VisionTransformer(
            config.image_size,
            config.patch_size,
            config.encoder_dim,
            config.encoder_depth,
            config.encoder_heads,
            config.encoder_mlp_dim,
            config.dropout,
            config.drop_path,
            stem=config.stem,
            stem_norm=config.stem_norm,
            sincos_grid=config.sincos_grid,
            name="encoder",
            dtype=policy,
        )
        self.projection = ImageProjection(
            config.grid,
            config.decoder_dim,
            config.decoder_mlp_dim,
            config.dropout,
            config.drop_path,
            sincos_grid=config.sincos_grid,
            name="projection",
            dtype=policy,
        )
        self.decoder = Pix2SeqDecoder(
            config.vocab_size,
            config.max_seq_len,
            config.decoder_dim,
            config.decoder_depth,
            config.decoder_heads,
            config.decoder_mlp_dim,
            config.dropout,
            config.drop_path,
            name="decoder",
            dtype=policy,
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{task}_loss") for task in task_names()]

    def build(self, input_shape=None):
        """Creates every weight; shapes come from the config, `input_shape` is ignored."""
        size = self.config.image_size
        self.encoder.build((None, size, size, 3))
        self.projection.build((None, self.config.num_image_tokens, self.config.encoder_dim))
        self.decoder.build((None, None), (None, self.config.num_image_tokens, self.config.decoder_dim))
        if self.config.coordinate_init == "sincos":
            embeddings = self.decoder.token_embedding.embeddings
            rows = coordinate_embeddings(self.config.tokens.num_bins, embeddings.shape[1], float(ops.std(embeddings)))
            embeddings.assign(ops.slice_update(embeddings, (vocab.COORD_OFFSET, 0), ops.cast(rows, embeddings.dtype)))
        self.built = True

    def embedding_variables(self):
        """The token and position embedding tables (excluded from weight decay)."""
        return [self.decoder.token_embedding.embeddings, self.decoder.position_embedding]

    @property
    def metrics(self):
        return [self.loss_tracker] + self.task_loss_trackers

    def encode(self, images, training=False):
        """Images `[B, S, S, 3]` in [0, 1] -> memory `[B, T, decoder_dim]`."""
        return self.projection(self.encoder(images, training=training), training=training)

    def call(self, inputs, training=False):
        """`{"image", "input_tokens"}` -> float32 logits `[B, L, vocab_size]` (teacher forcing)."""
        memory = self.encode(inputs["image"], training=training)
        return self.decoder(inputs["input_tokens"], memory, training=training)

    # --- losses -----------------------------------------------------------------------------

    def _batch_mixing_losses(self, data, training):
        """`{task: (local sum w*xent, global sum w)}` for a `{task: batch}` element."""
        tasks = [t for t in task_names() if t in data]
        unknown = sorted(set(data) - set(task_names()))
        if unknown:
            raise ValueError(f"Training batch has unknown tasks {unknown}; expected names from {task_names()}")
        images = ops.concatenate([data[t]["image"] for t in tasks], axis=0)
        memory = self.encode(images, training=training)
        sizes = [ops.shape(data[t]["image"])[0] for t in tasks]
        parts, start = {}, 0
        for task, size in zip(tasks, sizes):
            batch = data[task]
            task_memory = memory[start : start + size]
            start = start + size
            tokens, targets, weights = (batch[k] for k in ("input_tokens", "target_tokens", "token_weights"))
            if len(tokens.shape) == 3:  # [B, K, L]: K sequences per image
                per_image = tokens.shape[1]
                task_memory = ops.repeat(task_memory, per_image, axis=0)
                tokens, targets, weights = (ops.reshape(x, (-1, x.shape[-1])) for x in (tokens, targets, weights))
            logits = self.decoder(tokens, task_memory, training=training)
            numerator, denominator = weighted_xent_parts(targets, logits, weights)
            parts[task] = (numerator, global_sum(ops.stop_gradient(denominator)))
        total = sum(self.task_weights.get(t, 0.0) * ops.divide_no_nan(n, d) for t, (n, d) in parts.items())
        return total, parts

    def _data_mixing_losses(self, data, training):
        """Whole-batch token-weighted loss plus per-task parts selected by `task_id`."""
        logits = self(data, training=training)
        xent = token_xent(data["target_tokens"], logits)
        weights = ops.cast(data["token_weights"], "float32")
        task_id = ops.cast(data["task_id"], "int32")
        parts = {}
        for i, task in enumerate(task_names()):
            w = weights * ops.cast(task_id == i, "float32")[:, None]
            parts[task] = (ops.sum(w * xent), global_sum(ops.stop_gradient(ops.sum(w))))
        denominator = global_sum(ops.stop_gradient(ops.sum(weights)))
        return ops.divide_no_nan(ops.sum(weights * xent), denominator), parts

    def compute_task_losses(self, data, training=False):
        """`(total loss of this replica's share, {task: (numerator, global denominator)})`."""
        if "task_id" in data:
            return self._data_mixing_losses(data, training)
        return self._batch_mixing_losses(data, training)

    def _update_metrics(self, total, parts):
        """Global (all-replica) losses; a task without weighted tokens in this batch is not counted,
        nor is a batch without any (the empty step Keras' evaluate may run at the end of a
        dataset whose last batch is partial)."""
        any_tokens = ops.cast(sum(denominator for _, denominator in parts.values()) > 0, "float32")
        self.loss_tracker.update_state(global_sum(ops.stop_gradient(total)), sample_weight=any_tokens)
        logs = {"loss": self.loss_tracker.result()}
        for task, tracker in zip(task_names(), self.task_loss_trackers):
            if task in parts:
                numerator, denominator = parts[task]
                loss = ops.divide_no_nan(global_sum(ops.stop_gradient(numerator)), denominator)
                tracker.update_state(loss, sample_weight=ops.cast(denominator > 0, "float32"))
                logs[tracker.name] = tracker.result()
        return logs

    # --- Keras steps --------------------------------------------------------------------------

    def train_step(self, data):
        with tf.GradientTape() as tape:
            total, parts = self.compute_task_losses(data, training=True)
            scaled = self.optimizer.scale_loss(total)
        grads = tape.gradient(scaled, self.trainable_variables)
        if self.global_clipnorm:
            grads = self._clip_global_gradient(grads)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update_metrics(total, parts)

    def _clip_global_gradient(self, grads):
        """Clips the all-replica gradient sum; returns per-replica shares the optimizer sums back."""
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        if replicas > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        # Gradients are of the scaled loss (`optimizer.scale_loss`): scale the threshold alike.
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            loss_scale = ops.cast(self.optimizer.dynamic_scale, "float32")
        else:
            loss_scale = self.optimizer.loss_scale_factor or 1.0
        grads, _ = tf.clip_by_global_norm(grads, self.global_clipnorm * loss_scale)
        return [g / replicas for g in grads] if replicas > 1 else grads

    def test_step(self, data):
        total, parts = self.compute_task_losses(data, training=False)
        return self._update_metrics(total, parts)

    # --- presets, saving, generation -----------------------------------------------------------

    @classmethod
    def from_preset(cls, preset_or_dir, examples=None, task_weights=None, global_clipnorm=None, **overrides):
        """A built model from a preset name (`model.config.PRESETS`: random weights) or a
        directory `save_to_preset` wrote (`pix2seq train` / `import-checkpoint` output: its
        weights and caption vocabulary; then no overrides).

        Args:
          examples: an ingested Examples directory (model/datasets.py) to size the model
            for: its caption vocabulary, class map and keypoint schema (and its caption
            model for `generate`). Preset names only.
          task_weights / global_clipnorm: as the constructor.
          **overrides: `ModelConfig` or token fields, e.g. `encoder_depth=2, max_instances=5`.
        """
        if preset_or_dir not in PRESETS and tf.io.gfile.exists(os.path.join(preset_or_dir, CONFIG_FILE)):
            if overrides or examples is not None:
                raise ValueError(f"a saved model's architecture is fixed: no overrides/examples with a directory. "
                                 f"Received: {sorted(overrides) + (['examples'] if examples else [])}")
            with tf.io.gfile.GFile(os.path.join(preset_or_dir, CONFIG_FILE)) as f:
                saved = json.load(f)
            model = cls(ModelConfig.from_dict(saved["model"]),
                        task_weights=saved["task_weights"] if task_weights is None else task_weights,
                        global_clipnorm=global_clipnorm)
            model.build()
            model.load_weights(os.path.join(preset_or_dir, WEIGHTS_FILE), skip_mismatch=False)
            caption_model = os.path.join(preset_or_dir, CAPTION_MODEL)
            model.caption_vocab_file = caption_model if tf.io.gfile.exists(caption_model) else None
            return model
        if preset_or_dir not in PRESETS:
            raise ValueError(f"Unknown preset {preset_or_dir!r}: expected one of {tuple(PRESETS)} or a directory "
                             f"holding {CONFIG_FILE} and {WEIGHTS_FILE} (save_to_preset)")
        if examples is not None:
            config = datasets.model_config_for(preset_or_dir, examples, **overrides)
        else:
            config = preset(preset_or_dir, **overrides)
        model = cls(config, task_weights=task_weights, global_clipnorm=global_clipnorm)
        model.build()
        if examples is not None:
            model.caption_vocab_file = datasets.caption_model_file(examples)
        return model

    def save_to_preset(self, directory):
        """Writes `model.weights.h5`, `model_config.json` (and `caption_spm.model` when the
        model has one) for `from_preset(directory)` and warm starts (`--init-checkpoint`)."""
        tf.io.gfile.makedirs(directory)
        self.save_weights(os.path.join(directory, WEIGHTS_FILE))
        with tf.io.gfile.GFile(os.path.join(directory, CONFIG_FILE), "w") as f:
            json.dump({"model": self.config.to_dict(), "task_weights": self.task_weights}, f, indent=1)
        target = os.path.join(directory, CAPTION_MODEL)
        if self.caption_vocab_file and self.caption_vocab_file != target:
            tf.io.gfile.copy(self.caption_vocab_file, target, overwrite=True)

    def save_assets(self, dir_path):
        """Keras `.keras` saving: the caption vocabulary goes into the archive."""
        if self.caption_vocab_file:
            tf.io.gfile.copy(self.caption_vocab_file, os.path.join(dir_path, CAPTION_MODEL), overwrite=True)

    def load_assets(self, dir_path):
        """Keras `.keras` loading: the archive's assets are deleted after loading, so the
        caption vocabulary is copied to a file of its own."""
        source = os.path.join(dir_path, CAPTION_MODEL)
        if os.path.exists(source):
            handle, path = tempfile.mkstemp(suffix="_" + CAPTION_MODEL)
            os.close(handle)
            shutil.copyfile(source, path)
            self.caption_vocab_file = path

    def generate(self, images, task="detect", **options):
        """Per-image results (model/results.py, the same as `pix2seq predict`) for
        `images`: file paths, encoded bytes, or pixels (numpy/tensor `[H, W, 3]` or a
        batch `[B, H, W, 3]`, uint8 or floats in [0, 1]). `task`: "detect", "segment",
        "keypoints", "caption" or "all"; options: model/generate.py `generate`."""
        return generate_lib.generate(self, images, task, **options)

    def get_config(self):
        return {
            **super().get_config(),
            "config": self.config.to_dict(),
            "task_weights": self.task_weights,
            "global_clipnorm": self.global_clipnorm,
        }


def coordinate_embeddings(num_bins, dim, scale):
    """`[num_bins, dim]` sine-cosine features of each bin's position in [0, 1], std `scale`.

    Frequencies span 1 to 64 half-turns over the canvas, so nearby bins get nearby
    vectors while every bin stays distinguishable: the tied output layer can then
    express "about here" before it has learned every bin separately.
    """
    position = np.arange(num_bins, dtype=np.float64)[:, None] / max(num_bins - 1, 1)
    half = dim // 2
    omega = np.pi * 2.0 ** (np.arange(half, dtype=np.float64)[None, :] * 6.0 / half)
    table = np.concatenate([np.sin(position * omega), np.cos(position * omega)], axis=1)
    if table.shape[1] < dim:
        table = np.pad(table, ((0, 0), (0, dim - table.shape[1])))
    return (table * (scale / table.std())).astype(np.float32)
