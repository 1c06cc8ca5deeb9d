"""model/input_pipelines.py: per-task batches, batch mixing, data mixing, eval, tf.distribute."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import example_records as er
from model import input_pipelines as pipelines
from model import vocab
from model.tasks import get_task, seq_len

TC = vocab.TokenConfig(image_size=32, max_instances=6, max_polygon_points=16, caption_vocab_size=64,
                       max_caption_len=10, keypoint_flip_pairs=tuple(zip(er.LEFT, er.RIGHT)))
PROMPTS = {"detection": vocab.DETECTION_PROMPT, "segmentation": vocab.SEGMENTATION_PROMPT,
           "keypoints": vocab.KEYPOINT_PROMPT, "captioning": vocab.CAPTION_PROMPT}
NUM_IMAGES = 6


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return er.write_shards(str(tmp_path_factory.mktemp("shards")), NUM_IMAGES, num_shards=2)


def token_shape(task, size, training=True):
    """Training batches: [B, L], or [B, K, L] for a task training K sequences per image;
    eval batches: [B, L]."""
    per_image = get_task(task, TC).sequences_per_image if training else 1
    return (size, seq_len(task, TC)) if per_image == 1 else (size, per_image, seq_len(task, TC))


def assert_task_batch(batch, task, size, training=True):
    length = seq_len(task, TC)
    assert batch["image"].shape == (size, TC.image_size, TC.image_size, 3)
    assert batch["image"].dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(batch["image"])) and float(tf.reduce_max(batch["image"])) <= 1.0
    for key, dtype in (("input_tokens", tf.int32), ("target_tokens", tf.int32), ("token_weights", tf.float32)):
        assert batch[key].shape == token_shape(task, size, training) and batch[key].dtype == dtype
    weights = batch["token_weights"].numpy().reshape(size, -1, length)
    tokens = batch["input_tokens"].numpy().reshape(size, -1, length)
    used = weights.sum(axis=2) > 0
    assert np.all(used.any(axis=1))  # every image trains at least one sequence
    np.testing.assert_array_equal(tokens[used][:, 0], PROMPTS[task])
    assert not tokens[~used].any()  # rows without weight are all PAD


@pytest.mark.slow
def test_batch_mixing_one_static_batch_per_task_per_step(files):
    ds = pipelines.batch_mixing_dataset(files, pipelines.task_names(), TC, batch_size=4, seed=1)
    for task in pipelines.task_names():  # static shapes, for TPU
        assert ds.element_spec[task]["image"].shape == (4, TC.image_size, TC.image_size, 3)
        assert ds.element_spec[task]["input_tokens"].shape == token_shape(task, 4)
    steps = list(ds.take(2))
    for step in steps:
        assert set(step) == set(pipelines.task_names())
        for task in pipelines.task_names():
            assert_task_batch(step[task], task, 4)
    # Each task draws its own augmentation: the detection and captioning images differ.
    assert not np.allclose(steps[0]["detection"]["image"], steps[0]["captioning"]["image"])


@pytest.mark.slow
def test_data_mixing_follows_the_weights(files):
    weights = {"detection": 0.4, "segmentation": 0.3, "keypoints": 0.2, "captioning": 0.1}
    ds = pipelines.data_mixing_dataset(files, weights, TC, batch_size=100, seed=2)
    longest = max(seq_len(t, TC) for t in weights)
    assert ds.element_spec["input_tokens"].shape == (100, longest)
    ids, first = [], None
    for batch in ds.take(20):
        first = first or batch
        ids.append(batch["task_id"].numpy())
    ids = np.concatenate(ids)
    assert ids.size == 2000
    for task, w in weights.items():
        share = np.mean(ids == pipelines.task_id(task))
        assert abs(share - w) <= 3 * np.sqrt(w * (1 - w) / ids.size), (task, share)
    # Shorter tasks are padded with PAD and weight 0; every row starts with its task's prompt.
    for row, tid in enumerate(first["task_id"].numpy()):
        task = pipelines.task_names()[tid]
        assert first["input_tokens"].numpy()[row, 0] == PROMPTS[task]
        assert not first["token_weights"].numpy()[row, seq_len(task, TC):].any()


@pytest.mark.slow
def test_training_uses_several_instances_and_captions_of_an_image_per_step(files):
    """The paper's recipe: all (<= 10) instances and (<= 5) captions of an image in one
    step, one sequence each; here 3 instances and 2 captions per image."""
    for task, count in (("segmentation", 3), ("captioning", 2)):
        batch = next(iter(pipelines.train_dataset(files, task, TC, batch_size=2, seed=3)))
        weights = batch["token_weights"].numpy()
        for image in range(2):
            used = weights[image].sum(axis=1) > 0
            assert used.sum() == count, task
            firsts = {tuple(row) for row in batch["target_tokens"].numpy()[image][used][:, :5]}
            assert len(firsts) == count, task  # distinct instances / captions
    one = dataclasses.replace(TC, segmentation_instances_per_image=1, captions_per_image=1)
    for task in ("segmentation", "captioning"):
        batch = next(iter(pipelines.train_dataset(files, task, one, batch_size=2, seed=3)))
        assert batch["input_tokens"].shape == (2, seq_len(task, one))


@pytest.mark.slow
def test_eval_is_deterministic_and_covers_every_instance(files):
    for task, expected in (("detection", NUM_IMAGES), ("segmentation", 3 * NUM_IMAGES),
                           ("keypoints", NUM_IMAGES), ("captioning", NUM_IMAGES)):
        ds = pipelines.eval_dataset(files, task, TC, batch_size=2)
        runs = [list(ds), list(ds)]
        assert sum(b["image"].shape[0] for b in runs[0]) == expected
        for a, b in zip(*runs):
            assert_task_batch(a, task, 2, training=False)
            for key in a:
                np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
        if task == "detection":  # the 3 non-crowd objects, no noise, then EOS
            target = runs[0][0]["target_tokens"].numpy()[0]
            assert np.all(target[:15] > 0) and target[15] == vocab.EOS
            assert sorted(target[4:15:5] - vocab.CLASS_OFFSET) == [1, 2, 3]


@pytest.mark.slow
def test_training_stream_is_reproducible_for_a_seed(files):
    take = lambda: list(pipelines.train_dataset(files, "captioning", TC, 3, seed=5).take(2))  # noqa: E731
    a, b = take(), take()
    for key in a[0]:
        np.testing.assert_array_equal(a[0][key].numpy(), b[0][key].numpy())
        np.testing.assert_array_equal(a[1][key].numpy(), b[1][key].numpy())
    assert not np.array_equal(a[0]["image"].numpy(), a[1]["image"].numpy())


@pytest.mark.slow
def test_distribute_datasets_from_function_on_the_default_strategy(files):
    strategy = tf.distribute.get_strategy()
    fn = pipelines.distributed_dataset_fn(pipelines.batch_mixing_dataset, files,
                                          ("detection", "captioning"), TC, 4, seed=3)
    dist = strategy.distribute_datasets_from_function(fn)
    step = next(iter(dist))
    assert_task_batch(step["detection"], "detection", 4)
    assert_task_batch(step["captioning"], "captioning", 4)
    # Two replicas: each input pipeline gets half of the global batch.
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    half = pipelines.train_dataset(files, "captioning", TC, 4, input_context=ctx)
    assert half.element_spec["image"].shape[0] == 2


@pytest.mark.slow
def test_training_on_files_without_a_task_fails_clearly(tmp_path):
    rec, png = er.make_record(1, seed=1)
    rec = dict(rec, objects=[o for o in rec["objects"] if o["keypoints"] is None])
    path = str(tmp_path / "no_people.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        writer.write(er.serialized(rec, png))
    with pytest.raises(ValueError, match="can make a keypoints sequence"):
        pipelines.train_dataset([path], "keypoints", TC, 2)
    assert list(pipelines.eval_dataset([path], "keypoints", TC, 2)) == []  # eval: simply empty


def test_bad_arguments_are_rejected(files):
    with pytest.raises(ValueError, match="Unknown task"):
        pipelines.train_dataset(files, "depth", TC, 2)
    with pytest.raises(ValueError, match="weights"):
        pipelines.data_mixing_dataset(files, {"depth": 1.0}, TC, 2)
    with pytest.raises(ValueError, match="at least one task"):
        pipelines.batch_mixing_dataset(files, (), TC, 2)


@pytest.mark.slow
def test_an_ingested_coco_dir_feeds_the_pipelines(synth_coco_dir, tmp_path):
    """Beam ingestion's Examples directory (components/beam_ingest.py) is what the
    pipelines read: the eval split gives every image with a caption."""
    from components import beam_ingest
    from model import datasets

    examples, _ = beam_ingest.ingest(synth_coco_dir, str(tmp_path), caption_vocab_size=200)
    info = datasets.dataset_info(examples)
    assert info["num_images"] == {"eval": 6, "train": 12} and datasets.caption_model_file(examples)
    tc = vocab.TokenConfig(image_size=32, max_instances=6, max_polygon_points=16,
                           caption_vocab_size=info["caption_vocab_size"], max_caption_len=10)
    batches = list(pipelines.eval_dataset(datasets.split_pattern(examples, "eval"), "captioning", tc,
                                          batch_size=2))
    assert sum(b["image"].shape[0] for b in batches) == 6
    assert_task_batch(batches[0], "captioning", 2, training=False)


@pytest.mark.slow
def test_a_resumed_stream_skips_consumed_elements_without_decoding_them(files, monkeypatch):
    """Batch mixing at `start_batch` == the stream from 0 with that many batches skipped,
    yet it decodes only what it yields (the replay decodes every skipped image)."""
    decoded = []
    decode = pipelines.parse.decode_parsed

    def counting_decode(example):
        out = decode(example)
        tick = tf.py_function(lambda: decoded.append(1) or 0, [], tf.int32)
        with tf.control_dependencies([tick]):
            return dict(out, image=tf.identity(out["image"]))

    monkeypatch.setattr(pipelines.parse, "decode_parsed", counting_decode)
    tasks, start = ("detection", "captioning"), 30
    resumed = next(iter(pipelines.batch_mixing_dataset(files, tasks, TC, 2, seed=3, start_batch=start)))
    resumed_decodes = len(decoded)
    decoded.clear()
    replayed = next(iter(pipelines.batch_mixing_dataset(files, tasks, TC, 2, seed=3).skip(start)))
    replayed_decodes = len(decoded)
    for task in tasks:
        for key in resumed[task]:
            np.testing.assert_array_equal(resumed[task][key].numpy(), replayed[task][key].numpy())
    assert replayed_decodes >= len(tasks) * 2 * (start + 1)
    assert resumed_decodes < replayed_decodes / 4, (resumed_decodes, replayed_decodes)
