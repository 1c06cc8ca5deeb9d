"""The serving SavedModel: per-task signatures over encoded image bytes.

`export_saved_model(model, export_dir, caption_vocab_file=None)` writes it with
`keras.export.ExportArchive`, which tracks the variables the traced functions use, so
the SavedModel loads in TF2 (`tf.saved_model.load`) and in the session-based loader
TF Serving's C++ server uses (`saved_model_cli run`). The TFX Trainer's `run_fn`
calls it into `fn_args.serving_model_dir`. Graph work: `model/serving_graph.py`
(core TF ops only, no jit_compile).

Signatures (every input is required, as TF Serving requires; `images` is a string
`[B]` of encoded JPEG/PNG; coordinates are image pixels, boxes `(ymin, xmin, ymax,
xmax)`; M = max_instances, N = instances given per image, S = num_samples (sampled
polygons per instance, 8 by default), P = polygon points, K = keypoints):

| signature | inputs | outputs |
|---|---|---|
| `detect` = `serving_default` | images | boxes f32 [B,M,4], classes i32 [B,M] (argmax over the class range at each class position), scores f32 [B,M] (that class's probability; sorted, padding last), num_detections i32 [B] |
| `segment` | images, boxes f32 [B,N,4], classes i32 [B,N] | polygons f32 [B,N,S,P,2] (y, x pixels; every sample), polygon_parts i32 [B,N,S,P] (part index, -1 unused) |
| `keypoints` | images, boxes f32 [B,N,4] (persons) | keypoints f32 [B,N,K,3] (x, y, score of the point), keypoint_scores f32 [B,N] (mean probability of the 2K coordinate tokens) |
| `caption` | images | captions string [B] |
| `detect_and_describe` | images | detect's outputs + segment's (for every detection, N = M) + keypoints and keypoint_scores (for detected persons, zeros otherwise) + captions |
| `detect_examples` | examples: string [B] serialized tf.Examples (ingested layout, `image/encoded` read) | the same as detect on those image bytes |
| `model_info` | none | keypoint_category_id i32 [] (the category whose detections get keypoints), category_ids i32 [C] (the categories the model may report) |

A mask is the shared results code's work (`model/results.py`): rasterize each of the
S polygons of an instance at image resolution, average, keep >= 0.5; its score is the
detection's. Padding instances (class <= 0 or an empty box) give zeros (polygon
parts -1). The inference rules are the paper's (`model/serving_graph.py`). Options per
request: TF Serving cannot leave an input out, so each signature has a
`<name>_with_options` twin that adds scalar inputs; the plain signature uses the paper's defaults
(each task class's `decoding_defaults`, seed 0):
`detect_with_options`: max_objects i32, temperature f32, top_p f32, seed i32;
`segment_with_options`: num_samples i32, temperature, top_p, seed;
`keypoints_with_options` / `caption_with_options`: temperature, top_p, seed;
`detect_and_describe_with_options`: max_objects, temperature, top_p (detection),
num_samples, seed (the later stages keep their paper defaults).
A temperature <= 0 means greedy decoding. Sampling is seeded: the same request with
the same seed gives the same answer.

`detect_examples` has one string [None] input, the only shape through which
TFX's BulkInferrer and InfraValidator feed records to a Predict signature. Next to the
SavedModel, `assets.extra/` holds TF Serving's warm-up requests and the model config.

A model serves the tasks it was trained for, and only those: `export_saved_model(...,
tasks=...)` writes each task's signatures (each task class's `signatures`; `detect_and_describe` when
detection and another task are there, describing with the model's other tasks), so a
detection-only model has `detect`, `detect_with_options` and `detect_examples` (and
`model_info`, which every model has), and
`serving_default` is the first signature written (`detect` when there is one). The
signature names are how anyone tells a model's tasks (`signatures.tasks_of`):
TF Serving's GetModelMetadata lists them, so a client knows what a served model does.
"""
import json
import os

import pix2seq  # noqa: F401  (Keras 3 guard)

import keras
import tensorflow as tf

from data import features
from model import warmup_requests
from model.signatures import MODEL_CONFIG_FILE, MODEL_INFO, SIGNATURES, signatures_for_tasks
from model.serving_graph import InferenceGraph
from model.tasks import task_names

IMAGES = tf.TensorSpec([None], tf.string, name="images")
# Serialized tf.Examples in the ingested layout (data/features.py): one string input of
# shape [None], what TFX's BulkInferrer and InfraValidator feed a Predict signature.
EXAMPLES = tf.TensorSpec([None], tf.string, name="examples")
BOXES = tf.TensorSpec([None, None, 4], tf.float32, name="boxes")
CLASSES = tf.TensorSpec([None, None], tf.int32, name="classes")


def _scalar(name, dtype):
    return tf.TensorSpec([], dtype, name=name)


MAX_OBJECTS = _scalar("max_objects", tf.int32)
TEMPERATURE = _scalar("temperature", tf.float32)
TOP_P = _scalar("top_p", tf.float32)
NUM_SAMPLES = _scalar("num_samples", tf.int32)
SEED = _scalar("seed", tf.int32)


def _defaults(task, **extra):
    """A task head's sampling defaults (`Task.decoding_defaults`), seed 0."""
    return {**task.decoding_defaults, "seed": 0, **extra}


def default_options(graph: InferenceGraph) -> dict:
    """{plain signature: {option input: value}}: what each plain signature passes its
    `_with_options` twin (the paper's settings, seed 0)."""
    det = _defaults(graph.detection, max_objects=graph.config.max_instances)
    seg = _defaults(graph.segmentation)
    return {"detect": det, "segment": seg, "keypoints": _defaults(graph.keypoint_task),
            "caption": _defaults(graph.captioning),
            "detect_and_describe": {**det, "num_samples": seg["num_samples"]}}


def plain_name(signature: str) -> str:
    """`detect_with_options` / `detect_examples` -> `detect`."""
    for suffix in ("_with_options", "_examples"):
        if signature.endswith(suffix):
            return signature[: -len(suffix)]
    return signature


def signature_functions(graph: InferenceGraph, tasks=None):
    """name -> (python function, input TensorSpecs), in registration order (detect first);
    `detect_and_describe` describes the detections with the other `tasks` only.

    Image decoding + encoding and each task stage are traced once as `tf.function`s
    and called from every signature that needs them (function calls in the
    SavedModel graph): `detect_and_describe` reuses the detect, segment, keypoints and
    caption stages, and a plain signature calls its `_with_options` twin with the
    defaults. Exporting thus traces each decoding loop once.
    """
    tasks = task_names() if tasks is None else tasks
    options = default_options(graph)
    det, seg, kp, cap = (options[n] for n in ("detect", "segment", "keypoints", "caption"))
    decoder = graph.model.decoder
    cross_spec = tf.TensorSpec(
        [None, decoder.depth, 2, decoder.num_heads, graph.model.config.num_image_tokens, decoder.head_dim],
        decoder.compute_dtype, name="cross")
    frame_specs = [IMAGES, tf.TensorSpec([None, 2], tf.int32, name="image_size"),
                   tf.TensorSpec([None, 2], tf.float32, name="canvas_scale"), cross_spec]

    def traced(*specs):
        return lambda fn: tf.function(fn, input_signature=list(specs), autograph=False)

    def as_frame(images, image_size, canvas_scale, cross):
        return {"images": images, "image_size": image_size, "canvas_scale": canvas_scale, "cross": cross}

    @traced(IMAGES)
    def frame_stage(images):
        f = graph.frame(images)
        return f["image_size"], f["canvas_scale"], f["cross"]

    @traced(*frame_specs, MAX_OBJECTS, TEMPERATURE, TOP_P, SEED)
    def detect_stage(images, image_size, canvas_scale, cross, max_objects, temperature, top_p, seed):
        return graph.detect(as_frame(images, image_size, canvas_scale, cross), max_objects, temperature, top_p, seed)

    @traced(*frame_specs, BOXES, CLASSES, NUM_SAMPLES, TEMPERATURE, TOP_P, SEED)
    def segment_stage(images, image_size, canvas_scale, cross, boxes, classes, num_samples, temperature, top_p, seed):
        return graph.segment(as_frame(images, image_size, canvas_scale, cross), boxes, classes,
                             num_samples, temperature, top_p, seed)

    @traced(IMAGES, frame_specs[1], BOXES, TEMPERATURE, TOP_P, SEED)
    def keypoints_stage(images, image_size, boxes, temperature, top_p, seed):
        return graph.keypoints(images, image_size, boxes, temperature, top_p, seed)

    @traced(*frame_specs, TEMPERATURE, TOP_P, SEED)
    def caption_stage(images, image_size, canvas_scale, cross, temperature, top_p, seed):
        return graph.caption(as_frame(images, image_size, canvas_scale, cross), temperature, top_p, seed)

    def detect_with_options(images, max_objects, temperature, top_p, seed):
        return detect_stage(images, *frame_stage(images), max_objects, temperature, top_p, seed)

    def segment_with_options(images, boxes, classes, num_samples, temperature, top_p, seed):
        return segment_stage(images, *frame_stage(images), boxes, classes, num_samples, temperature, top_p, seed)

    def keypoints_with_options(images, boxes, temperature, top_p, seed):
        hw = tf.map_fn(lambda d: tf.shape(tf.io.decode_image(d, channels=3, expand_animations=False))[:2],
                       images, fn_output_signature=tf.TensorSpec([2], tf.int32))
        return keypoints_stage(images, hw, boxes, temperature, top_p, seed)

    def caption_with_options(images, temperature, top_p, seed):
        return caption_stage(images, *frame_stage(images), temperature, top_p, seed)

    def detect_and_describe_with_options(images, max_objects, temperature, top_p, num_samples, seed):
        frame = (images, *frame_stage(images))
        found = detect_stage(*frame, max_objects, temperature, top_p, seed)
        out = dict(found)
        if graph.segmentation.name in tasks:
            out.update(segment_stage(*frame, found["boxes"], found["classes"], num_samples,
                                     seg["temperature"], seg["top_p"], seed))
        if graph.keypoint_task.name in tasks:
            out.update(keypoints_stage(images, frame[1], graph.person_boxes(found),
                                       kp["temperature"], kp["top_p"], seed))
        if graph.captioning.name in tasks:
            out.update(caption_stage(*frame, cap["temperature"], cap["top_p"], seed))
        return out

    def example_images(examples):
        spec = {features.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)}
        return tf.io.parse_example(examples, spec)[features.IMAGE_ENCODED]

    def detect(images):
        return detect_with_options(images, det["max_objects"], det["temperature"], det["top_p"], det["seed"])

    def detect_and_describe(images):
        return detect_and_describe_with_options(
            images, det["max_objects"], det["temperature"], det["top_p"], seg["num_samples"], det["seed"])

    table = {
        "detect": (detect, [IMAGES]),
        "segment": (lambda images, boxes, classes: segment_with_options(
            images, boxes, classes, seg["num_samples"], seg["temperature"], seg["top_p"], seg["seed"]),
            [IMAGES, BOXES, CLASSES]),
        "keypoints": (lambda images, boxes: keypoints_with_options(
            images, boxes, kp["temperature"], kp["top_p"], kp["seed"]), [IMAGES, BOXES]),
        "caption": (lambda images: caption_with_options(
            images, cap["temperature"], cap["top_p"], cap["seed"]), [IMAGES]),
        "detect_and_describe": (detect_and_describe, [IMAGES]),
        "detect_with_options": (detect_with_options, [IMAGES, MAX_OBJECTS, TEMPERATURE, TOP_P, SEED]),
        "segment_with_options": (segment_with_options,
                                 [IMAGES, BOXES, CLASSES, NUM_SAMPLES, TEMPERATURE, TOP_P, SEED]),
        "keypoints_with_options": (keypoints_with_options, [IMAGES, BOXES, TEMPERATURE, TOP_P, SEED]),
        "caption_with_options": (caption_with_options, [IMAGES, TEMPERATURE, TOP_P, SEED]),
        "detect_and_describe_with_options": (
            detect_and_describe_with_options, [IMAGES, MAX_OBJECTS, TEMPERATURE, TOP_P, NUM_SAMPLES, SEED]),
        "detect_examples": (lambda examples: detect(example_images(examples)), [EXAMPLES]),
        MODEL_INFO: (graph.model_info, []),
    }
    return table


def warmup_logs(specs: dict, options: dict, batch_sizes):
    """PredictionLogs for TF Serving's warm-up: every signature in `specs` ({name: input
    TensorSpecs}) and `serving_default` (= the first) at every batch size, with the plain
    signature's `options` (`default_options`)."""
    first = next(iter(specs))
    specs = {"serving_default": specs[first], **specs}
    for name, inputs in specs.items():
        if not inputs:  # model_info: constants, nothing to warm up
            continue
        plain = plain_name(first if name == "serving_default" else name)
        for batch_size in batch_sizes:
            values = warmup_requests.sample_inputs([s.name for s in inputs], batch_size, options[plain])
            yield warmup_requests.predict_log(name, values, {s.name: s.dtype for s in inputs})


def export_saved_model(model, export_dir, caption_vocab_file=None, signatures=None, tasks=None,
                       warmup_batch_sizes=warmup_requests.DEFAULT_BATCH_SIZES):
    """Write the serving SavedModel of `model` (a built `Pix2SeqModel`) to `export_dir`,
    with TF Serving warm-up records (model/warmup_requests.py) and the model's
    config (`MODEL_CONFIG_FILE`) in `assets.extra/`.

    Args:
      caption_vocab_file: SentencePiece model for caption text (default: the model's
        `caption_vocab_file`; neither: piece ids).
      signatures: names to export (default: every signature of `tasks`); `detect`, when
        exported, is first, so it is also `serving_default`.
      tasks: the tasks the model was trained for (`TrainResult.tasks`); a signature of
        another task is a ValueError.
      warmup_batch_sizes: batch sizes recorded per signature (empty: no warm-up file).
    Returns:
      export_dir.
    """
    tasks = [t for t in task_names() if tasks is None or t in tasks]
    allowed = signatures_for_tasks(tasks)
    names = list(allowed if signatures is None else signatures)
    unknown = sorted(set(names) - set(SIGNATURES))
    if unknown:
        raise ValueError(f"Unknown signatures {unknown}; expected names from {SIGNATURES}.")
    untrained = sorted(set(names) - set(allowed))
    if untrained:
        raise ValueError(f"signatures {untrained} serve tasks the model was not trained for; a model "
                         f"trained for {tasks} exports {allowed}")
    graph = InferenceGraph(model, caption_vocab_file=caption_vocab_file or getattr(model, "caption_vocab_file", None))
    functions = signature_functions(graph, tasks)
    names = [n for n in names if n == "detect"] + [n for n in names if n != "detect"]
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name in names:
        fn, spec = functions[name]
        if spec:
            archive.add_endpoint(name, fn, input_signature=spec)
        else:  # ExportArchive reads an empty input_signature as "none given"
            archive.add_endpoint(name, tf.function(fn, input_signature=[], autograph=False))
    archive.write_out(export_dir, verbose=False)
    tf.io.gfile.makedirs(os.path.join(export_dir, os.path.dirname(MODEL_CONFIG_FILE)))
    with tf.io.gfile.GFile(os.path.join(export_dir, MODEL_CONFIG_FILE), "w") as f:
        f.write(json.dumps(model.config.to_dict(), indent=1, sort_keys=True))
    if warmup_batch_sizes:
        specs = {name: functions[name][1] for name in names}
        warmup_requests.write(export_dir, warmup_logs(specs, default_options(graph), warmup_batch_sizes))
    return export_dir
