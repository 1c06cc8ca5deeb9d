"""A model that answers with the ground truth: the oracle behind the post-processing test.

`make_oracle(model, files)` patches a built `Pix2SeqModel` so that, wherever it is
decoded (eagerly or inside the exported SavedModel), its decoder emits the ground-truth
token sequence the data pipeline builds for the row's image, instance or person crop
(`model.input_pipelines.eval_examples`, never augmented), whatever the sampler drew before.
Everything after the decoder — grammar, sampling, the tasks' decode rules, the canvas
and crop geometry of the serving graph, the results code and the COCO metrics — is the
real code, so an oracle that does not score ~1 AP points at a bug there.

How a row finds its sequence: the patched `encode` turns each canvas into a fingerprint
(the mean colour of every patch), which the patched `compute_cross_cache` carries in
the cross cache; a decoding row compares its fingerprint and its prompt tokens with
every table entry and follows the closest one (segmentation rows of one image differ
by their box prompt, keypoint rows by the person crop they decode on).
"""
import numpy as np
import tensorflow as tf

from model import input_pipelines as pipelines
from model import vocab
from model.tasks import get_task

# Logit of the oracle's token (all others 0): its probability is ~1 - V * e^-30.
CONFIDENCE = 30.0
# A mean squared colour difference of 1e-4 between fingerprints counts like one
# prompt token off by one bin.
FINGERPRINT_WEIGHT = 1e4
_LONG_PROMPT_TASKS = (vocab.SEGMENTATION_PROMPT, vocab.KEYPOINT_PROMPT)
_PROMPT = 6  # the longest task prompt


def fingerprint(canvas, patch):
    """Canvases [B, S, S, 3] -> mean colour of each patch x patch cell [B, (S/patch)^2, 3]."""
    canvas = tf.cast(canvas, tf.float32)
    size = canvas.shape[1]
    cells = size // patch
    grid = tf.reshape(canvas, [-1, cells, patch, cells, patch, 3])
    return tf.reshape(tf.reduce_mean(grid, axis=[2, 4]), [-1, cells * cells, 3])


def build_table(files, token_config, patch, tasks=pipelines.task_names()):
    """Ground-truth entries of the eval split `files`: fingerprint [E, F], prompt [E, 6]
    (zero after the task's prompt), response [E, R] (the tokens after the prompt)."""
    prints, prompts, responses = [], [], []
    for task in tasks:
        p = get_task(task, token_config).prompt_length
        for element in pipelines.eval_examples(files, task, token_config):
            seq_in = element["input_tokens"].numpy()
            seq_target = element["target_tokens"].numpy()
            prompts.append(np.pad(seq_in[:p], [0, _PROMPT - p]))
            responses.append(seq_target[p - 1:])
            prints.append(fingerprint(element["image"][tf.newaxis], patch)[0].numpy().reshape(-1))
    length = max(len(r) for r in responses)
    responses = [np.pad(r, [0, length - len(r)]) for r in responses]
    return {"fingerprint": np.stack(prints).astype(np.float32), "prompt": np.stack(prompts).astype(np.int32),
            "response": np.stack(responses).astype(np.int32)}


class OracleRunner:
    """The `CachedDecoder` interface (`init_cache`, `__call__`) answering from the table.

    Its "cache" is the token history [B, max_len], written like a self-attention cache.
    """

    def __init__(self, table, cross_cache, max_len, vocab_size):
        cross = tf.cast(cross_cache[:, 0, 0, 0, :, :3], tf.float32)
        self.prints = tf.reshape(cross, [tf.shape(cross)[0], -1])
        self.table = {k: tf.constant(v) for k, v in table.items()}
        self.max_len = int(max_len)
        self.vocab_size = int(vocab_size)

    def init_cache(self, batch):
        return tf.zeros(tf.stack([batch, self.max_len]), tf.int32)

    def __call__(self, tokens, cache, index):
        tokens = tf.convert_to_tensor(tokens, tf.int32)
        n = tokens.shape[1]
        index = tf.cast(index, tf.int32)
        slots = tf.one_hot(index + tf.range(n), self.max_len, dtype=tf.int32)  # [n, max_len]
        written = tf.reduce_sum(tokens[:, :, tf.newaxis] * slots[tf.newaxis], axis=1)
        cache = tf.where(tf.reduce_any(slots > 0, axis=0)[tf.newaxis], written, cache)

        task_token = cache[:, 0]
        long_prompt = tf.reduce_any(task_token[:, tf.newaxis] == tf.constant(_LONG_PROMPT_TASKS), axis=1)
        p = tf.where(long_prompt, _PROMPT, 1)
        prompt = tf.where(tf.range(_PROMPT)[tf.newaxis] < p[:, tf.newaxis], cache[:, :_PROMPT], 0)

        t = self.table
        print_d = tf.reduce_mean(tf.square(self.prints[:, tf.newaxis] - t["fingerprint"][tf.newaxis]), axis=2)
        prompt_d = tf.reduce_sum(tf.abs(prompt[:, tf.newaxis] - t["prompt"][tf.newaxis]), axis=2)
        other_task = tf.cast(t["prompt"][tf.newaxis, :, 0] != task_token[:, tf.newaxis], tf.float32)
        distance = FINGERPRINT_WEIGHT * print_d + tf.cast(prompt_d, tf.float32) + 1e9 * other_task
        entry = tf.argmin(distance, axis=1, output_type=tf.int32)

        response = tf.gather(t["response"], entry)  # [B, R]
        step = tf.clip_by_value(index + n - p, 0, response.shape[1] - 1)
        token = tf.gather(response, step[:, tf.newaxis], batch_dims=1)[:, 0]
        logits = tf.one_hot(token, self.vocab_size) * CONFIDENCE
        return tf.tile(logits[:, tf.newaxis], [1, n, 1]), cache


def make_oracle(model, files, tasks=pipelines.task_names()):
    """Patches `model` (built) in place to answer with the ground truth of `files`."""
    config = model.config
    patch = config.patch_size
    table = build_table(files, config.tokens, patch, tasks)
    decoder = model.decoder
    dim = decoder.dim

    def encode(images, training=False):
        del training
        prints = fingerprint(images, patch)
        return tf.pad(prints, [[0, 0], [0, 0], [0, dim - 3]])

    def compute_cross_cache(memory):
        head = tf.cast(memory[:, :, :decoder.head_dim], decoder.compute_dtype)
        head = head[:, tf.newaxis, tf.newaxis, tf.newaxis]
        return tf.tile(head, [1, decoder.depth, 2, decoder.num_heads, 1, 1])

    def prepare_decoding(cross_cache, max_len, vocab_limit=None, in_place=None):
        del in_place
        return OracleRunner(table, cross_cache, max_len, vocab_limit or decoder.vocab_size)

    model.encode = encode
    decoder.compute_cross_cache = compute_cross_cache
    decoder.prepare_decoding = prepare_decoding
    return table
