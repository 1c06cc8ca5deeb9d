"""The fifth-task recipe (docs/CONTRACTS.md "Adding a task"), proven: a task defined
and registered here, in one place, goes through the generic code (input pipelines,
the model's losses and training step, the decoding loop) without any generic module
knowing it.

The task counts objects: prompt `14`, then one coordinate-bin token holding the
number of non-crowd objects (at most `max_instances`), then EOS. It reuses
detection's canvas and object rule by delegation and trains without augmentation.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import example_records as er
from model import decoding, vocab
from model import input_pipelines as pipelines
from model import tasks as tasks_lib
from model.pix2seq_model import Pix2SeqModel
from model.tasks import base
from model.tasks.detection import DetectionTask
from training_utils import micro_config

COUNT_PROMPT = 14  # an id no built-in task uses (prompts are 10..13)


class CountTask(base.Task):
    """How many objects the image shows, as one token."""

    name = "counting"
    prompt_length = 1
    readout_dtypes = {"count_prob": tf.float32}
    needs = "any image"
    dataset_needs = "objects"

    @classmethod
    def sequence_length(cls, token_config) -> int:
        return 2  # input: prompt, count; target: count, EOS

    def __init__(self, token_config):
        super().__init__(token_config)
        self._detection = DetectionTask(token_config)
        self._counts = self._np_range(vocab.COORD_OFFSET, vocab.COORD_OFFSET + token_config.max_instances + 1)
        self._eos = self._np_ids(vocab.EOS)

    # the data path: detection's canvas; training does not augment (kept cheap)
    def augment(self, example, seed, *config):
        del seed, config
        return self._detection.prepare_eval(example)

    def prepare_eval(self, example, *index_and_style):
        return self._detection.prepare_eval(example, *index_and_style)

    def codec_inputs(self, example, per_image=False):
        return self._detection.codec_inputs(example, per_image)

    # the sequence
    def count(self, example):
        n = tf.reduce_sum(tf.cast(self._detection.valid_objects(example), tf.int32))
        return tf.minimum(n, self.config.max_instances)

    def build_sequences(self, example, seed=0, augment=True):
        del seed, augment
        response = tf.stack([vocab.COORD_OFFSET + self.count(example), vocab.EOS])
        return self._teacher_forcing([COUNT_PROMPT], response, response, tf.ones([2]))

    # the inference head
    def inference_prompt(self, batch_size):
        return tf.fill([batch_size, 1], tf.constant(COUNT_PROMPT, tf.int32))

    def grammar_mask(self, step, prev_tokens):
        allowed = tf.where(tf.equal(step, 0), tf.constant(self._counts), tf.constant(self._eos))
        return self._finish_mask(allowed, step, prev_tokens)

    def step_readout(self, step, logits, token):
        del step
        probs = tf.nn.softmax(tf.cast(logits, tf.float32), -1)
        token = tf.cast(token, tf.int32)
        return {"count_prob": tf.gather(probs, token[..., tf.newaxis], batch_dims=token.shape.rank)[..., 0]}

    def decode(self, tokens, logits=None, readout=None):
        tokens, readout, _ = self._readout(tokens, logits, readout)
        count = tokens[:, 0] - vocab.COORD_OFFSET
        return {"count": count, "valid": (count >= 0) & (count <= self.config.max_instances),
                "score": readout["count_prob"][:, 0]}


@pytest.fixture(scope="module")
def counting():
    tasks_lib.register_task(CountTask)
    try:
        yield micro_config(max_instances=4)
    finally:
        tasks_lib.unregister_task(CountTask.name)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return er.write_shards(str(tmp_path_factory.mktemp("count_shards")), 2, num_shards=1)


@pytest.fixture(scope="module")
def batch(counting, files):
    """A training step's batch from the generic batch mixing, the new task's stream in it."""
    return next(iter(pipelines.batch_mixing_dataset(files, ["counting"], counting.tokens, 2)))


def test_registration_is_public_and_undone():
    builtin = tasks_lib.task_names()
    tasks_lib.register_task(CountTask)
    try:
        assert tasks_lib.task_names() == builtin + ("counting",)
        with pytest.raises(ValueError, match="already registered"):
            tasks_lib.register_task(CountTask)
    finally:
        tasks_lib.unregister_task("counting")
    assert tasks_lib.task_names() == builtin
    with pytest.raises(ValueError, match="Unknown task 'counting'"):
        tasks_lib.get_task("counting", vocab.TokenConfig())
    with pytest.raises(TypeError, match="Task subclass"):
        tasks_lib.register_task(dict)
    with pytest.raises(ValueError, match="built in"):
        tasks_lib.unregister_task("detection")


def test_sequences_through_the_generic_input_pipelines(counting, files, batch):
    tokens = counting.tokens
    # eval: example_records draws three shapes and one crowd per image: the count is 3
    count = next(iter(pipelines.eval_dataset(files, "counting", tokens, 2)))
    assert np.array_equal(count["input_tokens"].numpy(), [[COUNT_PROMPT, vocab.COORD_OFFSET + 3]] * 2)
    assert np.array_equal(count["target_tokens"].numpy(), [[vocab.COORD_OFFSET + 3, vocab.EOS]] * 2)
    assert np.array_equal(count["token_weights"].numpy(), np.ones([2, 2]))
    # training: batch mixing feeds it the same sequences (this task does not augment)
    assert batch["counting"]["input_tokens"].shape == (2, 2)
    assert np.array_equal(np.sort(batch["counting"]["target_tokens"].numpy(), 0), count["target_tokens"].numpy())
    assert batch["counting"]["image"].shape == (2, tokens.image_size, tokens.image_size, 3)
    assert pipelines.task_id("counting") == len(tasks_lib.BUILTIN_TASKS)


def test_loss_trains_and_decoding_reads_out(counting, batch):
    model = Pix2SeqModel(counting, task_weights={"counting": 1.0})
    images = batch["counting"]["image"]
    model({"image": images, "input_tokens": batch["counting"]["input_tokens"]})  # builds it
    model.compile(optimizer=keras.optimizers.Adam(3e-3))

    def counting_loss():
        numerator, denominator = model.compute_task_losses(batch)[1]["counting"]
        return float(numerator / denominator)

    before = counting_loss()
    for _ in range(5):
        logs = model.train_step(batch)
    assert "counting_loss" in logs and counting_loss() < before

    task = tasks_lib.get_task("counting", counting.tokens)
    out = decoding.generate(model, images, task.inference_prompt(2), task.max_response_len,
                            constraint=decoding.task_constraint(task), readout=decoding.task_readout(task))
    parsed = task.decode(out["tokens"], readout=out["readout"])
    assert parsed["valid"].numpy().all() and np.array_equal(out["tokens"].numpy()[:, 1], [vocab.EOS] * 2)
    # the loop's readout equals the task's readout of one full pass over the same tokens
    full = tf.concat([task.inference_prompt(2), out["tokens"][:, :-1]], 1)
    logits = model({"image": images, "input_tokens": full})
    again = task.decode(out["tokens"], logits=logits)
    np.testing.assert_allclose(parsed["score"].numpy(), again["score"].numpy(), rtol=1e-4, atol=1e-5)
    assert ((parsed["score"].numpy() > 0) & (parsed["score"].numpy() <= 1)).all()
