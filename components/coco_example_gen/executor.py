"""CocoExampleGen executor: runs components/beam_ingest.py on the executor's Beam
pipeline and records split names and counts on the output artifacts."""
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components import beam_ingest
from components.coco_example_gen import driver
from data import fingerprint

_SPLIT_ORDER = ("train", "eval")


class Executor(base_beam_executor.BaseBeamExecutor):
    """TFX calls `Do` once per execution; a rejected run raises IngestError
    after writing the error report into the `error_report` artifact's directory."""

    def Do(self, input_dict, output_dict, exec_properties):
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        vocabulary = artifact_utils.get_single_instance(output_dict["vocabulary"])
        report = artifact_utils.get_single_instance(output_dict["error_report"])
        # The driver's value; computed here when the orchestrator ran no driver.
        input_fingerprint = (exec_properties.get(driver.INPUT_FINGERPRINT)
                             or str(fingerprint.input_fingerprint(exec_properties["coco_dir"])))
        summary = beam_ingest.run_ingest(
            exec_properties["coco_dir"], examples.uri, vocabulary.uri, report.uri,
            make_pipeline=self._make_beam_pipeline,
            caption_vocab_size=exec_properties["caption_vocab_size"],
            max_error_fraction=exec_properties["max_error_fraction"],
            num_shards=exec_properties["num_shards"])
        splits = sorted(summary["images_written"], key=_SPLIT_ORDER.index)
        examples.split_names = artifact_utils.encode_split_names(splits)
        examples.set_string_custom_property("file_format", "tfrecords_gzip")
        examples.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
        examples.set_string_custom_property(driver.INPUT_FINGERPRINT, input_fingerprint)
        vocabulary.set_int_custom_property("caption_vocab_size", summary["caption_vocab_size"])
        report.set_int_custom_property("num_records", summary["total_records"])
        report.set_int_custom_property("num_rejected", summary["dropped"])
