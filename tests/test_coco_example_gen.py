"""CocoExampleGen alone in a LocalDagRunner pipeline on `pix2seq synth` output."""
import json
import os

import pytest

import ingest_checks

pytestmark = pytest.mark.slow  # runs CocoExampleGen in a TFX LocalDagRunner pipeline


@pytest.fixture(scope="module")
def component_run(synth_coco_dir, tmp_path_factory):
    from tfx import v1 as tfx
    from tfx.orchestration import metadata

    from components.coco_example_gen import CocoExampleGen

    root = tmp_path_factory.mktemp("tfx")
    gen = CocoExampleGen(coco_dir=synth_coco_dir, caption_vocab_size=500)
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(str(root / "mlmd.sqlite"))
    pipeline = tfx.dsl.Pipeline(pipeline_name="coco_example_gen_test", pipeline_root=str(root / "pipeline"),
                                components=[gen], metadata_connection_config=config)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    with metadata.Metadata(config) as store:
        artifacts = {}
        for a in store.store.get_artifacts():
            type_name = store.store.get_artifact_types_by_id([a.type_id])[0].name
            artifacts.setdefault(type_name, []).append(a)
    return artifacts


def _single(artifacts, type_name):
    (artifact,) = artifacts[type_name]
    return artifact


def test_examples_artifact_holds_both_splits_equal_to_source(component_run, synth_coco_dir):
    examples = _single(component_run, "Examples")
    props = examples.custom_properties
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "eval"]
    assert props["file_format"].string_value == "tfrecords_gzip"
    vocabulary = _single(component_run, "pix2seq.CaptionVocabulary")
    counts = ingest_checks.assert_examples_equal_source(
        examples.uri, synth_coco_dir, os.path.join(vocabulary.uri, "caption_spm.model"))
    assert counts == {"train": 12, "eval": 6}


def test_vocabulary_artifact(component_run):
    import sentencepiece as spm

    vocabulary = _single(component_run, "pix2seq.CaptionVocabulary")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(vocabulary.uri, "caption_spm.model"))
    size = vocabulary.custom_properties["caption_vocab_size"].int_value
    assert size == sp.get_piece_size() > 3
    with open(os.path.join(vocabulary.uri, "vocab_info.json")) as f:
        assert json.load(f)["caption_vocab_size"] == size


def test_error_report_artifact_is_empty(component_run):
    report = _single(component_run, "pix2seq.IngestReport")
    with open(os.path.join(report.uri, "errors.jsonl")) as f:
        assert f.read() == ""
    assert report.custom_properties["num_rejected"].int_value == 0
    assert report.custom_properties["num_records"].int_value > 18
