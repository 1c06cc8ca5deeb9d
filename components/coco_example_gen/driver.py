"""CocoExampleGen's driver: fingerprints the COCO directory before the cache lookup.

The launcher runs a component's driver after resolving its inputs and before it
looks for a cached execution; the exec properties the driver returns join the
cache key (TFX's FileBasedExampleGen driver works the same way). Here that
property is `input_fingerprint` (data/fingerprint.py): change, add or remove an
annotation or an image and the key changes, so ingestion and everything
downstream of the Examples run again; leave the directory alone and the cached
Examples are reused.

Orchestrators that run no custom drivers (KubeflowV2 runs only TFX's own
ExampleGen driver) skip this; runner_vertex then turns caching off for this step.
"""
from tfx.dsl.components.base import base_driver as legacy_driver
from tfx.orchestration.portable import base_driver
from tfx.proto.orchestration import driver_output_pb2

from data import fingerprint

INPUT_FINGERPRINT = "input_fingerprint"  # TFX's name (tfx.components.example_gen.utils)


class InputFingerprintDriver(legacy_driver.BaseDriver, base_driver.BaseDriver):
    """Adds `input_fingerprint` of `coco_dir` to the execution's properties.

    (The legacy base class only satisfies BaseComponent's DRIVER_CLASS check; the
    IR launcher calls `run`.)
    """

    def __init__(self, mlmd_connection):
        legacy_driver.BaseDriver.__init__(self, mlmd_connection)
        base_driver.BaseDriver.__init__(self, mlmd_connection)

    def run(self, execution_info) -> driver_output_pb2.DriverOutput:
        output = driver_output_pb2.DriverOutput()
        value = str(fingerprint.input_fingerprint(execution_info.exec_properties["coco_dir"]))
        output.exec_properties[INPUT_FINGERPRINT].string_value = value
        return output
