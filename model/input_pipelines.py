"""tf.data input pipelines: shards -> per-task token batches, batch mixing, data mixing.

Lives in model/ because it composes the data ops (data/: parse, augment, prepare)
with the task codecs (model/tasks); data/ never imports model/ (tests/test_architecture.py).

Per task: parse (data/parse.py) -> keep images the task can use -> decode ->
augment (train) or prepare (eval) -> the task codec's `build_sequences`. Which images
a task can use, its augmentation and its canvas are the task's (model/tasks: `usable`,
`augment`, `prepare_eval`, `eval_candidates`, `codec_inputs`, over the ops of
data/augment.py and data/preprocess.py); this module loops over tasks and names none -> static-shape batches with drop_remainder
(TPU). One batch (CONTRACTS.md "Training batches"):
  image float32 [B, S, S, 3] in [0, 1], input_tokens / target_tokens int32 [B, L_t],
  token_weights float32 [B, L_t];
in training, a codec that trains K = `sequences_per_image` > 1 sequences per image
(segmentation instances, captions) gives [B, K, L_t] (the model encodes each image
once); data mixing splits them into one element per sequence.

Randomness is stateless: element i of a stream gets the seed (base, i), base derived
from the user seed, the task and the input pipeline, so runs repeat exactly and every
task in batch mixing has its own augmentation. Eval pipelines never augment and
expand segmentation/keypoints to one element per instance.

A resumed run asks for the stream at a start position: batch mixing skips the
consumed elements while they are still parsed, undecoded records (element i keeps its
seed), so a resume never decodes or augments an image twice; data mixing's rows come
out of decoded images (a segmentation image gives as many rows as its crop keeps
instances), so it replays the consumed batches.

Every builder takes `input_context` (tf.distribute.InputContext) and so plugs into
`strategy.distribute_datasets_from_function` through `distributed_dataset_fn`.
"""
import tensorflow as tf

import pix2seq  # noqa: F401  (Keras 3 guard)
from data import augment as augment_lib
from data import parse
from model.tasks import get_task, seq_len, task_names

SEQUENCE_KEYS = ("input_tokens", "target_tokens", "token_weights")


def _graph(fn):
    """Marks a tf.data function as plain graph code: autograph's conversion of the
    geometry and codec code it calls only costs tracing time."""
    return tf.autograph.experimental.do_not_convert(fn)


def task_id(task):
    if task not in task_names():
        raise ValueError(f"Unknown task {task!r}; expected one of {task_names()}.")
    return task_names().index(task)


def _sequences(codec, example, seed, training):
    """Training: the codec's `build_image_sequences` when it trains several sequences
    per image (tokens [K, L]); otherwise, and in evaluation, one sequence [L]."""
    per_image = training and codec.sequences_per_image > 1
    inputs = codec.codec_inputs(example, per_image)
    if per_image:
        seqs = codec.build_image_sequences(inputs, seed, augment=True)
    else:
        seqs = codec.build_sequences(inputs, seed, augment=training)
    out = {"image": example["image"]}
    out.update({k: seqs[k] for k in SEQUENCE_KEYS})
    return out


def _base_seed(seed, task, input_context):
    pipeline = input_context.input_pipeline_id if input_context is not None else 0
    return (int(seed) * len(task_names()) + task_id(task)) * 65536 + pipeline


def _per_replica(batch_size, input_context):
    if input_context is None:
        return batch_size
    return input_context.get_per_replica_batch_size(batch_size)


def _parsed(files, codec, token_config, input_context, shuffle_files=False, seed=None):
    records = parse.record_dataset(files, shuffle_files=shuffle_files, seed=seed,
                                   input_context=input_context)
    ds = records.map(_graph(lambda r: parse.parse_example(r, token_config.num_keypoints,
                                                          decode_image=False)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.filter(_graph(codec.usable))


def task_examples(files, task, token_config, seed=0, augment_config=augment_lib.AugmentConfig(),
                  input_context=None, shuffle_buffer=64, start=0):
    """Endless stream of unbatched training elements of one task (augmented, tokenized),
    from element `start` on (the elements before it are skipped undecoded).

    Raises ValueError when no example in `files` (this input pipeline's shard) is usable.
    """
    codec = get_task(task, token_config)
    base = _base_seed(seed, task, input_context)
    ds = _parsed(files, codec, token_config, input_context, shuffle_files=True, seed=base)
    if next(iter(ds.take(1)), None) is None:  # an endless stream must not end at once
        raise ValueError(f"no example in {files!r} can make a {task} sequence "
                         f"(needs: {codec.needs}).")
    ds = ds.shuffle(shuffle_buffer, seed=base, reshuffle_each_iteration=True).repeat()
    @_graph
    def make(index, example):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(base, tf.int64), index]), num=2)
        example = parse.decode_parsed(example)
        example = codec.augment(example, seeds[0], augment_config)
        return _sequences(codec, example, seeds[1], training=True)

    return ds.enumerate().skip(start).map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def train_dataset(files, task, token_config, batch_size, seed=0,
                  augment_config=augment_lib.AugmentConfig(), input_context=None, shuffle_buffer=64,
                  start_batch=0):
    """Endless batches of one task from batch `start_batch` on; `batch_size` is global
    when `input_context` is given."""
    per_replica = _per_replica(batch_size, input_context)
    ds = task_examples(files, task, token_config, seed, augment_config, input_context, shuffle_buffer,
                       start=start_batch * per_replica)
    return ds.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_examples(files, task, token_config, input_context=None):
    """Deterministic unbatched eval elements, never augmented: one per image (the task's
    `prepare_eval` at index 0, e.g. the first caption) or, for a task with
    `eval_per_instance`, one per `eval_candidates` entry."""
    codec = get_task(task, token_config)
    ds = _parsed(files, codec, token_config, input_context)
    ds = ds.map(_graph(parse.decode_parsed), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if codec.eval_per_instance:
        ds = ds.flat_map(_graph(lambda e: tf.data.Dataset.from_tensor_slices(codec.eval_candidates(e)).map(
            _graph(lambda i: codec.prepare_eval(e, i)))))
    else:
        ds = ds.map(_graph(codec.prepare_eval), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    seed = tf.constant([0, task_id(task)], tf.int64)
    return ds.map(_graph(lambda e: _sequences(codec, e, seed, training=False)),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def eval_dataset(files, task, token_config, batch_size, drop_remainder=True, input_context=None):
    """One deterministic pass over the eval split in batches."""
    ds = eval_examples(files, task, token_config, input_context)
    return ds.batch(_per_replica(batch_size, input_context), drop_remainder=drop_remainder).prefetch(
        tf.data.AUTOTUNE)


def batch_mixing_dataset(files, tasks, token_config, batch_size, seed=0,
                         augment_config=augment_lib.AugmentConfig(), input_context=None,
                         shuffle_buffer=64, start_batch=0):
    """Pix2Seq v2's batch mixing: every element is {task: batch} for every task, each
    task with its own augmentation stream, from element `start_batch` on.
    `batch_size`: int or {task: int} (global)."""
    if not tasks:
        raise ValueError("batch_mixing_dataset needs at least one task.")
    sizes = batch_size if isinstance(batch_size, dict) else {t: batch_size for t in tasks}
    streams = {t: train_dataset(files, t, token_config, sizes[t], seed, augment_config,
                                input_context, shuffle_buffer, start_batch) for t in tasks}
    return tf.data.Dataset.zip(streams)


def _pad_sequences(element, length):
    out = dict(element)
    for key in SEQUENCE_KEYS:
        seq = element[key]
        out[key] = tf.ensure_shape(tf.pad(seq, [[0, length - seq.shape[0]]]), [length])
    return out


def _one_sequence_per_element(ds):
    """Elements with tokens [K, L] -> K elements with tokens [L] (image repeated),
    weight-0 rows dropped; [L] elements pass unchanged."""
    if ds.element_spec["input_tokens"].shape.rank == 1:
        return ds

    def rows(e):
        k = tf.shape(e["input_tokens"])[0]
        out = {key: e[key] for key in SEQUENCE_KEYS}
        out["image"] = tf.repeat(e["image"][tf.newaxis], k, axis=0)
        return tf.data.Dataset.from_tensor_slices(out)

    return ds.flat_map(_graph(rows)).filter(_graph(lambda e: tf.reduce_sum(e["token_weights"]) > 0))


def data_mixing_dataset(files, weights, token_config, batch_size, seed=0,
                        augment_config=augment_lib.AugmentConfig(), input_context=None,
                        shuffle_buffer=64, start_batch=0):
    """Algorithm 1 (data mixing): one stream sampling task t with probability
    weights[t] / sum(weights); sequences padded (PAD, weight 0) to the longest enabled
    task; each element also carries `task_id` int32 [B] (index in task_names()).
    From batch `start_batch` on, by replaying the batches before it."""
    tasks = [t for t in task_names() if weights.get(t, 0) > 0]
    unknown = set(weights) - set(task_names())
    if unknown or not tasks:
        raise ValueError(f"data_mixing_dataset weights need known tasks with weight > 0. Received: {weights}")
    length = max(seq_len(t, token_config) for t in tasks)
    streams = []
    for t in tasks:
        ds = _one_sequence_per_element(
            task_examples(files, t, token_config, seed, augment_config, input_context, shuffle_buffer))
        tid = task_id(t)
        streams.append(ds.map(_graph(lambda e, tid=tid: dict(_pad_sequences(e, length),
                                                             task_id=tf.constant(tid, tf.int32)))))
    total = float(sum(weights[t] for t in tasks))
    mixed = tf.data.Dataset.sample_from_datasets(
        streams, [weights[t] / total for t in tasks], seed=_base_seed(seed, tasks[0], input_context))
    batches = mixed.batch(_per_replica(batch_size, input_context), drop_remainder=True)
    return batches.skip(start_batch).prefetch(tf.data.AUTOTUNE)


def distributed_dataset_fn(builder, *args, **kwargs):
    """`dataset_fn(input_context)` for `strategy.distribute_datasets_from_function`:
    calls builder(*args, input_context=ctx, **kwargs); batch sizes given to the
    builder are global and split per replica by the builder."""
    def dataset_fn(input_context):
        return builder(*args, input_context=input_context, **kwargs)
    return dataset_fn
