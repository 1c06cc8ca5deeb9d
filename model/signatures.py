"""Which signatures serve which task, and what an exported model serves.

A model exports the signatures of the tasks it was trained for (model/export.py); the
signature names are then how anyone tells its tasks: the evaluator and `pix2seq
evaluate` read them from saved_model.pb, `pix2seq predict` from the loaded model, a
serving client from TF Serving's GetModelMetadata (which lists them). No TensorFlow
graph code here, so serving code can read a model without importing Keras.
"""
import json
import os
import warnings

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from model.tasks import DetectionTask, task_class, task_names

# What the model tells about itself, with no input: `keypoint_category_id` int32 [] (the
# category whose detections get keypoints) and `category_ids` int32 [C] (the categories
# it may report). A Predict call, so a client learns them over gRPC (TF Serving's
# GetModelMetadata only lists signatures, not values); every model exports it.
MODEL_INFO = "model_info"
SIGNATURES = ("detect", "segment", "keypoints", "caption", "detect_and_describe",
              "detect_with_options", "segment_with_options", "keypoints_with_options",
              "caption_with_options", "detect_and_describe_with_options",
              "detect_examples", MODEL_INFO)
# The signatures that serve a task are its class's `signatures`; `DESCRIBE` needs
# detection and one more task, and its output `describe_output` tells a task is there.
DESCRIBE = ("detect_and_describe", "detect_and_describe_with_options")
# The ModelConfig the model was built with (model/export.py writes it), for model cards and people.
MODEL_CONFIG_FILE = os.path.join("assets.extra", "model_config.json")
# TF2 SavedModels list their init op as a signature; it is not callable by clients.
INTERNAL_SIGNATURES = ("__saved_model_init_op",)


def signatures_for_tasks(tasks):
    """Every signature a model trained for `tasks` exports, in `SIGNATURES` order."""
    unknown = sorted(set(tasks) - set(task_names()))
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {task_names()}. Received: {list(tasks)}")
    names = {n for t in tasks for n in task_class(t).signatures} | {MODEL_INFO}
    if DetectionTask.name in tasks and len(set(tasks)) > 1:
        names.update(DESCRIBE)
    return [n for n in SIGNATURES if n in names]


def tasks_of(signature_names, outputs=None):
    """The tasks a model with these signatures serves, in `task_names()` order: a task with
    any of its signatures there, plus, when `outputs` ({signature: output names}) is
    given, those `detect_and_describe` answers (a model exported with that signature alone)."""
    names = set(signature_names)
    found = {t for t in task_names() if names & set(task_class(t).signatures)}
    for name in DESCRIBE:
        if name in names and outputs and name in outputs:
            found |= {t for t in task_names() if task_class(t).describe_output in outputs[name]}
    return [t for t in task_names() if t in found]


def read_signature_defs(saved_model_dir, tag="serve"):
    """SignatureDef protos of the meta graph tagged `tag`, read from saved_model.pb
    without loading the model (as TF Serving reports them; the init op left out)."""
    proto = saved_model_pb2.SavedModel()
    path = os.path.join(saved_model_dir, "saved_model.pb")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    with warnings.catch_warnings(record=True) as caught:  # protobuf only warns on some garbage
        warnings.simplefilter("always", RuntimeWarning)
        try:
            proto.ParseFromString(data)
        except DecodeError as e:
            caught.append(e)
    if caught:
        problem = getattr(caught[0], "message", caught[0])
        raise ValueError(f"{path} is not a SavedModel proto ({len(data)} bytes): {problem}")
    for meta_graph in proto.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return {name: meta_graph_pb2.SignatureDef.FromString(sig.SerializeToString())
                    for name, sig in meta_graph.signature_def.items() if name not in INTERNAL_SIGNATURES}
    raise ValueError(f"{saved_model_dir}: no meta graph tagged {tag!r}")


def exported_tasks(saved_model_dir):
    """The tasks an exported SavedModel serves (`tasks_of` its signatures)."""
    defs = read_signature_defs(saved_model_dir)
    return tasks_of(defs, {name: set(d.outputs) for name, d in defs.items()})


def keypoint_category_id(saved_model_dir, default=1):
    """The category id whose detections get keypoints (the dataset's keypoint category,
    model/train_data.py), from the exported model config file; `default` without one
    (a client of a served model asks the `MODEL_INFO` signature instead)."""
    path = os.path.join(saved_model_dir, MODEL_CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return default
    with tf.io.gfile.GFile(path) as f:
        tokens = json.load(f).get("tokens") or {}
    index = int(tokens.get("person_class_id", default))
    ids = tokens.get("class_category_ids") or ()
    return int(ids[index - 1]) if ids else index


def missing_task_message(model, asked, served):
    """One paragraph for a request of tasks `asked` that a model serving `served` lacks."""
    missing = [t for t in asked if t not in served]
    return (f"the model {model} was trained without {', '.join(missing)}: it serves only "
            f"{', '.join(served) or 'no task'} (its signatures tell; a model exports the signatures of the "
            f"tasks it was trained for). Ask for {', '.join(served) or 'another model'} instead, or train "
            f"with {', '.join(missing)} on data that has it.")
