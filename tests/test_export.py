"""The serving SavedModel answers every signature through both loaders.

A fresh subprocess that imports only TensorFlow (never tensorflow_text, keras or
this project) loads the tiny export with TF2's `tf.saved_model.load` and with the
session-based loader TF Serving's C++ server uses (`tf.compat.v1.saved_model.loader`,
what `saved_model_cli run` calls), runs every signature on a PNG and a JPEG, and
saves the outputs; the checks below run on them. `saved_model_cli show --all` and
`saved_model_cli run` are exercised as commands.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tiny_export

PLAIN = ("detect", "segment", "keypoints", "caption", "detect_and_describe")
EXAMPLE_SIGNATURES = ("detect_examples",)
ALL = PLAIN + tuple(f"{n}_with_options" for n in PLAIN) + EXAMPLE_SIGNATURES + ("serving_default",)
SIZES = [(100, 150), (200, 120)]  # (height, width) of the two request images
BIN = os.path.dirname(sys.executable)
M = tiny_export.TINY_TOKENS["max_instances"]
P = tiny_export.TINY_TOKENS["max_polygon_points"]

RUNNER = r'''
import json, sys
import numpy as np
import tensorflow as tf

export_dir, request_file, out_file = sys.argv[1:4]
request = dict(np.load(request_file, allow_pickle=True))
options = json.loads(str(request.pop("options")))

def inputs_for(arg_names):
    feed = {k: request[k] for k in arg_names if k in request}
    for k in arg_names:
        if k not in feed:
            feed[k] = np.asarray(options[k])
    return feed

results = {}
loaded = tf.saved_model.load(export_dir)
for name, fn in loaded.signatures.items():
    args = fn.structured_input_signature[1]
    feed = {k: tf.constant(v, dtype=args[k].dtype) for k, v in inputs_for(args).items()}
    for key, value in fn(**feed).items():
        results[f"tf2/{name}/{key}"] = value.numpy()
again = loaded.signatures["detect_with_options"](**{k: tf.constant(v, dtype=loaded.signatures["detect_with_options"].structured_input_signature[1][k].dtype) for k, v in inputs_for(["images", "max_objects", "temperature", "top_p", "seed"]).items()})
results["tf2/repeat/boxes"] = again["boxes"].numpy()
options["seed"] = options["seed"] + 1
other = loaded.signatures["detect_with_options"](**{k: tf.constant(v, dtype=loaded.signatures["detect_with_options"].structured_input_signature[1][k].dtype) for k, v in inputs_for(["images", "max_objects", "temperature", "top_p", "seed"]).items()})
results["tf2/other_seed/boxes"] = other["boxes"].numpy()
options["seed"] = options["seed"] - 1

images = tf.constant(request["images"].tolist(), tf.string)
empty = loaded.signatures["segment"](images=images, boxes=tf.zeros([2, 1, 4]), classes=tf.zeros([2, 1], tf.int32))
results["tf2/empty_segment/polygons"] = empty["polygons"].numpy()
results["tf2/empty_segment/polygon_parts"] = empty["polygon_parts"].numpy()
empty = loaded.signatures["keypoints"](images=images, boxes=tf.zeros([2, 1, 4]))
results["tf2/empty_keypoints/keypoints"] = empty["keypoints"].numpy()
results["tf2/empty_keypoints/keypoint_scores"] = empty["keypoint_scores"].numpy()

with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    for name, sig in meta.signature_def.items():
        if name.startswith("__"):
            continue
        feed = {sig.inputs[k].name: v for k, v in inputs_for(list(sig.inputs)).items()}
        fetches = {k: sig.outputs[k].name for k in sig.outputs}
        for key, value in sess.run(fetches, feed).items():
            results[f"session/{name}/{key}"] = value
np.savez(out_file, **results)
print(json.dumps({m: m in sys.modules for m in ("tensorflow_text", "pix2seq", "model")}))
'''


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tiny_export.exported_tiny(tmp_path_factory)


def _ingested_example(image, image_id, height, width):
    """A serialized tf.Example as ingestion writes it (data/features.py), with one object."""
    from data import features

    record = {"image_id": image_id, "height": height, "width": width, "file_name": f"{image_id}.png",
              "objects": [{"bbox": [2, 3, 20, 10], "category_id": 3, "iscrowd": 0, "area": 200, "id": 1}]}
    return features.encode_example(record, image, "png", num_keypoints=17).SerializeToString()


@pytest.fixture(scope="module")
def answers(export_dir, tmp_path_factory):
    """Outputs of every signature from both loaders in a fresh process."""
    work = tmp_path_factory.mktemp("answers")
    images = np.array([tiny_export.encoded_image(*SIZES[0], 0, "PNG"),
                       tiny_export.encoded_image(*SIZES[1], 1, "JPEG")], dtype=object)
    boxes = np.array([[[10, 20, 60, 90], [0, 0, 0, 0]], [[30, 10, 150, 100], [5, 5, 50, 40]]], np.float32)
    classes = np.array([[3, 0], [1, 7]], np.int32)
    options = {"max_objects": 2, "temperature": 1.0, "top_p": 1.0, "num_samples": 3, "seed": 5}
    examples = np.array([_ingested_example(image, i, *size) for i, (image, size) in enumerate(zip(images, SIZES))],
                        dtype=object)
    np.savez(work / "request.npz", images=images, examples=examples, boxes=boxes, classes=classes,
             options=np.array(json.dumps(options)))
    script = work / "runner.py"
    script.write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, str(script), export_dir, str(work / "request.npz"), str(work / "out.npz")],
        capture_output=True, text=True, timeout=600, cwd=str(work), env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    return modules, dict(np.load(work / "out.npz", allow_pickle=True))


@pytest.mark.slow
def test_fresh_process_never_imports_tensorflow_text_or_our_code(answers):
    modules, _ = answers
    assert modules == {"tensorflow_text": False, "pix2seq": False, "model": False}


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["tf2", "session"])
def test_every_signature_answers(answers, loader):
    _, out = answers
    answered = {key.split("/")[1] for key in out if key.startswith(loader + "/")}
    assert set(ALL) <= answered


@pytest.mark.slow
def test_both_loaders_give_the_same_answers(answers):
    _, out = answers
    for key, value in out.items():
        if key.startswith("session/"):
            twin = out["tf2/" + key[len("session/"):]]
            if value.dtype.kind in "fc":
                np.testing.assert_allclose(value, twin, rtol=1e-4, atol=1e-4, err_msg=key)
            else:
                np.testing.assert_array_equal(value, twin, err_msg=key)


def _check_detections(out, prefix, max_objects):
    boxes, classes = out[prefix + "/boxes"], out[prefix + "/classes"]
    scores, count = out[prefix + "/scores"], out[prefix + "/num_detections"]
    assert boxes.shape == (2, M, 4) and classes.shape == scores.shape == (2, M)
    np.testing.assert_array_equal(count, (classes > 0).sum(axis=1))
    assert np.all(count <= max_objects)
    for i, (h, w) in enumerate(SIZES):
        assert np.all(boxes[i][:, [0, 2]] <= h) and np.all(boxes[i][:, [1, 3]] <= w) and np.all(boxes[i] >= 0)
        assert np.all(np.diff(scores[i]) <= 0)  # sorted by score
        assert np.all(boxes[i][:, :2] <= boxes[i][:, 2:])  # well-formed corners
    assert np.all((scores >= 0) & (scores <= 1)) and np.all((classes >= 0) & (classes <= 90))
    assert np.all(scores[classes == 0] == 0)


@pytest.mark.slow
def test_detect_is_serving_default_and_respects_options(answers):
    _, out = answers
    _check_detections(out, "tf2/detect", M)
    for key in ("boxes", "classes", "scores", "num_detections"):
        np.testing.assert_array_equal(out[f"tf2/detect/{key}"], out[f"tf2/serving_default/{key}"])
    _check_detections(out, "tf2/detect_with_options", 2)
    np.testing.assert_array_equal(out["tf2/detect_with_options/boxes"], out["tf2/repeat/boxes"])
    assert np.any(out["tf2/detect_with_options/boxes"] != out["tf2/other_seed/boxes"])


@pytest.mark.slow
def test_segment_returns_every_sampled_polygon_and_padding(answers):
    _, out = answers
    # 8 samples by default, 3 with options: one polygon per sample.
    for key, samples in (("segment", 8), ("segment_with_options", 3)):
        polygons, parts = out[f"tf2/{key}/polygons"], out[f"tf2/{key}/polygon_parts"]
        assert polygons.shape == (2, 2, samples, P, 2) and parts.shape == (2, 2, samples, P)
        assert parts.dtype == np.int32 and polygons.dtype == np.float32
        assert np.all(parts[0, 1] == -1) and np.all(polygons[0, 1] == 0)  # the padding instance
        for b, n in ((0, 0), (1, 0), (1, 1)):
            assert np.all(np.any(parts[b, n] >= 0, axis=-1))  # every sample has a point
            assert np.all(polygons[b, n][parts[b, n] < 0] == 0)
            # points are image pixels: within the padded square canvas of that image
            side = max(SIZES[b])
            assert np.all((polygons[b, n] >= 0) & (polygons[b, n] <= side + 1))
        assert len({polygons[1, 0, s].tobytes() for s in range(samples)}) > 1  # samples differ


@pytest.mark.slow
def test_no_instances_give_empty_answers(answers):
    _, out = answers
    polygons, parts = out["tf2/empty_segment/polygons"], out["tf2/empty_segment/polygon_parts"]
    assert polygons.shape == (2, 1, 8, P, 2) and not polygons.any() and np.all(parts == -1)
    kp, person = out["tf2/empty_keypoints/keypoints"], out["tf2/empty_keypoints/keypoint_scores"]
    assert kp.shape == (2, 1, 17, 3) and not kp.any() and person.shape == (2, 1) and not person.any()


@pytest.mark.slow
def test_keypoints_are_in_pixels_with_scores(answers):
    _, out = answers
    kp, person = out["tf2/keypoints/keypoints"], out["tf2/keypoints/keypoint_scores"]
    assert kp.shape == (2, 2, 17, 3) and person.shape == (2, 2)
    assert np.all(kp[0, 1] == 0) and person[0, 1] == 0  # padding person
    valid = kp[[0, 1, 1], [0, 0, 1]]
    assert np.all((valid[..., 2] > 0) & (valid[..., 2] <= 1))
    # the person score is the mean probability of the 2K tokens = the mean point score
    np.testing.assert_allclose(person[[0, 1, 1], [0, 0, 1]], valid[..., 2].mean(-1), rtol=1e-5)
    # Each person is decoded on a crop twice its box, resized onto the square canvas: a
    # point lies in the square (side: the crop's longer side) from the crop's corner.
    for pts, (y0, x0, y1, x1) in zip(valid, [(10, 20, 60, 90), (30, 10, 150, 100), (5, 5, 50, 40)]):
        top, left = max(1.5 * y0 - 0.5 * y1, 0), max(1.5 * x0 - 0.5 * x1, 0)
        side = 2 * max(y1 - y0, x1 - x0)
        assert np.all((pts[:, 0] >= left - 1) & (pts[:, 0] <= left + side + 1))
        assert np.all((pts[:, 1] >= top - 1) & (pts[:, 1] <= top + side + 1))


@pytest.mark.slow
def test_captions_are_text_from_the_vocabulary(answers):
    _, out = answers
    captions = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in out["tf2/caption/captions"]]
    assert len(captions) == 2
    alphabet = set("".join(tiny_export.CAPTIONS)) | {" ", "\u2047"}
    assert any(captions) and all(set(c) <= alphabet for c in captions)


@pytest.mark.slow
def test_detect_and_describe_covers_every_task(answers):
    _, out = answers
    prefix = "tf2/detect_and_describe"
    _check_detections(out, prefix, M)
    assert out[prefix + "/polygons"].shape == (2, M, 8, P, 2)
    parts = out[prefix + "/polygon_parts"]
    assert parts.shape == (2, M, 8, P)
    kp, person = out[prefix + "/keypoints"], out[prefix + "/keypoint_scores"]
    assert kp.shape == (2, M, 17, 3) and person.shape == (2, M)
    not_person = out[prefix + "/classes"] != 1
    assert np.all(kp[not_person] == 0) and np.all(person[not_person] == 0)
    boxes = out[prefix + "/boxes"]
    detected = out[prefix + "/classes"] > 0
    segmented = detected & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])  # empty box: padding
    assert segmented.any()
    assert np.all(parts[~segmented] == -1)
    assert np.all(np.any(parts[segmented] >= 0, axis=-1))
    assert out[prefix + "/captions"].shape == (2,)


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["tf2", "session"])
def test_example_signatures_answer_as_their_image_twins(answers, loader):
    """tf.Examples in the ingested layout give exactly what their image bytes give."""
    _, out = answers
    for name in EXAMPLE_SIGNATURES:
        twin = name[: -len("_examples")]
        keys = {k.split("/")[2] for k in out if k.startswith(f"{loader}/{twin}/")}
        assert keys and keys == {k.split("/")[2] for k in out if k.startswith(f"{loader}/{name}/")}
        for key in keys:
            np.testing.assert_array_equal(out[f"{loader}/{name}/{key}"], out[f"{loader}/{twin}/{key}"],
                                          err_msg=f"{name}/{key}")


@pytest.mark.slow
def test_infra_validator_requests_from_examples_run(export_dir, tmp_path):
    """TFX's InfraValidator builds Predict requests from an Examples artifact for a
    signature with one DT_STRING [None] input (BulkInferrer's RunInference has the same
    rule); the loaded model answers them with detect's outputs."""
    import tensorflow as tf
    from tfx.components.infra_validator import request_builder
    from tfx.proto import infra_validator_pb2
    from tfx.types import standard_artifacts

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    os.makedirs(model.uri)
    os.symlink(export_dir, os.path.join(model.uri, "Format-Serving"))
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = '["eval"]'
    os.makedirs(tmp_path / "examples" / "Split-eval")
    with tf.io.TFRecordWriter(str(tmp_path / "examples" / "Split-eval" / "data.gz"), "GZIP") as writer:
        writer.write(_ingested_example(tiny_export.encoded_image(40, 30, 7), 7, 40, 30))
    spec = infra_validator_pb2.RequestSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(signature_names=["detect_examples"]),
        split_name="eval", num_examples=1)
    requests = request_builder.build_requests("pix2seq", model, examples, spec)
    assert len(requests) == 1 and list(requests[0].inputs) == ["examples"]
    loaded = tf.saved_model.load(export_dir)
    outputs = loaded.signatures["detect_examples"](examples=tf.make_ndarray(requests[0].inputs["examples"]))
    assert outputs["boxes"].shape == (1, M, 4) and outputs["num_detections"].shape == (1,)


def test_warmup_requests_refuse_an_input_they_cannot_fill():
    from model import warmup_requests

    with pytest.raises(ValueError, match="No warm-up value for input 'mask'"):
        warmup_requests.sample_inputs(["images", "mask"], 1, {"seed": 0})


@pytest.mark.slow
def test_saved_model_cli_show_lists_signatures(export_dir):
    proc = subprocess.run([os.path.join(BIN, "saved_model_cli"), "show", "--dir", export_dir, "--all"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ALL:
        assert f"signature_def['{name}']" in proc.stdout
    for tensor in ("images", "boxes", "classes", "max_objects", "temperature", "top_p", "num_samples",
                   "seed", "num_detections", "polygons", "polygon_parts", "keypoints", "keypoint_scores",
                   "captions", "examples"):
        assert f"['{tensor}']" in proc.stdout, tensor


@pytest.mark.slow
def test_saved_model_cli_run_answers(export_dir, tmp_path):
    np.save(tmp_path / "images.npy", np.array([tiny_export.encoded_image(64, 48, 3, "JPEG")], dtype=object),
            allow_pickle=True)
    proc = subprocess.run(
        [os.path.join(BIN, "saved_model_cli"), "run", "--dir", export_dir, "--tag_set", "serve",
         "--signature_def", "detect_with_options", "--inputs", f"images={tmp_path / 'images.npy'}",
         "--input_exprs", "max_objects=2;temperature=0.0;top_p=0.5;seed=1", "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count = np.load(tmp_path / "out" / "num_detections.npy")
    boxes = np.load(tmp_path / "out" / "boxes.npy")
    assert count.shape == (1,) and 0 <= count[0] <= 2 and boxes.shape == (1, M, 4)


def test_unknown_signature_is_rejected(tmp_path):
    from model import export

    with pytest.raises(ValueError, match=r"Unknown signatures \['nope'\]"):
        export.export_saved_model(None, str(tmp_path), signatures=["detect", "nope"])
