"""The standard TFX Pusher, minus needless pushes of a model that is already served.

TFX's filesystem Pusher copies every blessed model to `<base_directory>/<unix time>/`.
When the evaluator runs again on the same model (a changed threshold, a new
baseline), the Pusher runs again too and would publish the identical model as a
new version: every TF Serving instance watching the directory reloads it for
nothing. This executor first compares the model with the newest version already
there, file by file (data/fingerprint.py); when they are equal it records that
version as the push (`pushed = 1`, `pushed_destination` = that directory,
`already_served = 1`) and writes nothing into the serving directory.
"""
from __future__ import annotations

import os
from typing import Optional

from tfx.components.pusher import component as tfx_pusher_component
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

import tensorflow as tf

from data import fingerprint

ALREADY_SERVED = "already_served"


def newest_version(base_directory: str) -> Optional[str]:
    """The highest numeric version directory under `base_directory`, or None."""
    if not tf.io.gfile.isdir(base_directory):
        return None
    versions = [name.rstrip("/") for name in tf.io.gfile.listdir(base_directory)]
    versions = [v for v in versions if v.isdigit() and tf.io.gfile.isdir(os.path.join(base_directory, v))]
    return os.path.join(base_directory, max(versions, key=int)) if versions else None


def same_files(a: str, b: str) -> bool:
    """Whether two directories hold the same relative paths with the same bytes."""
    by_content = lambda rel: True  # noqa: E731
    return fingerprint.tree_fingerprint(a, by_content) == fingerprint.tree_fingerprint(b, by_content)


class Executor(tfx_pusher.Executor):
    """TFX's Pusher executor; a model equal to the newest served version is not pushed again."""

    def Do(self, input_dict, output_dict, exec_properties):
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") == "filesystem" and self.CheckBlessing(input_dict):
            model_path = self.GetModelPath(input_dict)
            served = newest_version(destination.filesystem.base_directory)
            if served is not None and same_files(model_path, served):
                model_push = artifact_utils.get_single_instance(
                    output_dict[standard_component_specs.PUSHED_MODEL_KEY])
                io_utils.copy_dir(model_path, model_push.uri)  # archived like a push
                self._MarkPushed(model_push, pushed_destination=served, pushed_version=os.path.basename(served))
                model_push.set_int_custom_property(ALREADY_SERVED, 1)
                return
        super().Do(input_dict, output_dict, exec_properties)


class Pusher(tfx_pusher_component.Pusher):
    """TFX's Pusher component with the executor above (same spec, inputs and outputs)."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
