"""Deterministic random-token training streams for the training tests (no files needed)."""
import tensorflow as tf

from model.config import preset
from model.tasks import seq_len


def micro_config(**changes):
    """The tiny preset shrunk further so graphs trace fast: 32 px canvas, one layer each side."""
    base = dict(
        image_size=32,
        max_instances=2,
        max_polygon_points=4,
        max_caption_len=8,
        caption_vocab_size=16,
        encoder_depth=1,
        decoder_depth=1,
        encoder_dim=32,
        decoder_dim=32,
        encoder_mlp_dim=64,
        decoder_mlp_dim=64,
    )
    base.update(changes)
    return preset("tiny", **base)


def global_batch(config, tasks, step, batch_size):
    """The global batch of step `step`: `{task: batch}`, a pure function of (step, task)."""
    out = {}
    size = config.image_size
    for t_index, task in enumerate(tasks):
        length = seq_len(task, config.tokens)
        seed = tf.stack([tf.cast(step, tf.int64), tf.constant(t_index, tf.int64)])
        out[task] = {
            "image": tf.random.stateless_uniform([batch_size, size, size, 3], seed),
            "input_tokens": tf.random.stateless_uniform([batch_size, length], seed, 0, config.vocab_size, tf.int32),
            "target_tokens": tf.random.stateless_uniform([batch_size, length], seed + 7, 0, config.vocab_size, tf.int32),
            "token_weights": tf.random.stateless_uniform([batch_size, length], seed + 3),
        }
    return out


def random_dataset_fn(config, tasks, batch_size):
    """`(input_context, start_step) -> dataset` of per-replica slices of each step's global batch.

    A pipeline's elements go round-robin to its replicas (tf.distribute's per-worker
    replication), so element j holds step j // R, replica j % R of that pipeline.
    """

    def dataset_fn(input_context, start_step):
        pipelines = input_context.num_input_pipelines if input_context else 1
        replicas = (input_context.num_replicas_in_sync if input_context else 1) // pipelines
        first = (input_context.input_pipeline_id if input_context else 0) * replicas
        per = batch_size // (replicas * pipelines)

        def element(j):
            batch = global_batch(config, tasks, j // replicas, batch_size)
            row = (first + j % replicas) * per
            return tf.nest.map_structure(lambda x: x[row : row + per], batch)

        return tf.data.Dataset.range(start_step * replicas, 1 << 40).map(element)

    return dataset_fn
