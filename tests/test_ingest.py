"""The Beam ingestion pipeline on `pix2seq synth` data, and the `pix2seq ingest` CLI."""
import json
import os

import pytest
import sentencepiece as spm

import ingest_checks
import tiny_coco
from components import beam_ingest
from pix2seq import cli


@pytest.fixture(scope="module")
def ingested(synth_coco_dir, tmp_path_factory):
    import apache_beam as beam

    out = tmp_path_factory.mktemp("ingested")
    dirs = [str(out / d) for d in ("examples", "vocabulary", "report")]
    summary = beam_ingest.run_ingest(synth_coco_dir, *dirs, make_pipeline=beam.Pipeline,
                                     caption_vocab_size=500)
    return summary, dirs


@pytest.mark.slow
def test_shards_equal_source_annotations(ingested, synth_coco_dir):
    summary, (examples, vocabulary, report) = ingested
    counts = ingest_checks.assert_examples_equal_source(
        examples, synth_coco_dir, os.path.join(vocabulary, beam_ingest.SPM_MODEL))
    assert counts == summary["images_written"] == {"train": 12, "eval": 6}


@pytest.mark.slow
def test_clean_data_gives_empty_report(ingested):
    summary, (_, _, report) = ingested
    with open(os.path.join(report, beam_ingest.ERRORS)) as f:
        assert f.read() == ""
    assert summary["dropped"] == 0 and summary["dropped_by_reason"] == {}
    with open(os.path.join(report, beam_ingest.SUMMARY)) as f:
        assert json.load(f) == summary


@pytest.mark.slow
def test_vocabulary_and_dataset_info(ingested, synth_coco_dir):
    summary, (examples, vocabulary, _) = ingested
    with open(os.path.join(vocabulary, beam_ingest.VOCAB_INFO)) as f:
        info = json.load(f)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(vocabulary, beam_ingest.SPM_MODEL))
    assert info["caption_vocab_size"] == sp.get_piece_size() == summary["caption_vocab_size"]
    assert 3 < info["caption_vocab_size"] <= 500  # soft limit: what the corpus supports
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2)
    with open(os.path.join(examples, beam_ingest.SPM_MODEL), "rb") as a, \
            open(os.path.join(vocabulary, beam_ingest.SPM_MODEL), "rb") as b:
        assert a.read() == b.read()
    with open(os.path.join(examples, beam_ingest.DATASET_INFO)) as f:
        dataset = json.load(f)
    with open(os.path.join(synth_coco_dir, "annotations", "instances_train.json")) as f:
        source = {c["id"]: c["name"] for c in json.load(f)["categories"]}
    assert {c["id"]: c["name"] for c in dataset["categories"]} == source
    person = next(c for c in dataset["categories"] if c.get("keypoints"))
    assert len(person["keypoints"]) == dataset["num_keypoints"] == 17 and person["skeleton"]
    assert dataset["splits"] == ["eval", "train"]


@pytest.mark.slow
def test_cli_multiprocessing_writes_the_same_examples(synth_coco_dir, ingested, tmp_path, capsys):
    rc = cli.main(["ingest", "--coco-dir", synth_coco_dir, "--out", str(tmp_path), "--caption-vocab-size", "500",
                   "--beam-arg=--direct_num_workers=2", "--beam-arg=--direct_running_mode=multi_processing"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "images written: eval=6, train=12" in printed
    for split in ("train", "eval"):
        assert ingest_checks.read_split(str(tmp_path / "examples"), split) == \
            ingest_checks.read_split(ingested[1][0], split)
    assert (tmp_path / "report" / "errors.jsonl").read_text() == ""


def test_cli_workers_flag_is_direct_runner_multiprocessing():
    import argparse

    from pix2seq import ingest_cli

    parser = argparse.ArgumentParser()
    ingest_cli.add_arguments(parser)
    args = parser.parse_args(["--coco-dir", "d", "--out", "o", "--workers", "3", "--beam-arg=--runner=DirectRunner"])
    assert ingest_cli.beam_args(args) == ["--runner=DirectRunner", "--direct_num_workers=3",
                                          "--direct_running_mode=multi_processing"]
    assert beam_ingest.output_dirs("gs://b/out") == ("gs://b/out/examples", "gs://b/out/vocabulary",
                                                    "gs://b/out/report")


def test_cli_fails_over_max_error_fraction_with_summary(tmp_path, capsys):
    root = str(tmp_path / "coco")
    docs = tiny_coco.make_valid(root, num_images=3)
    docs["instances"]["images"].append({"id": 9, "file_name": "gone.jpg", "height": 8, "width": 8})
    docs["captions"]["annotations"].append({"id": 9, "image_id": 9, "caption": "a caption"})
    tiny_coco.write(root, docs)
    args = ["ingest", "--coco-dir", root, "--out", str(tmp_path / "out"), "--caption-vocab-size", "40"]
    assert cli.main(args) == 1
    printed = capsys.readouterr().out
    assert "rejected image_missing: 1" in printed and "FAILED" in printed
    assert "images written: train=3" in printed
    assert cli.main(args + ["--max-error-fraction", "0.2"]) == 0
    with open(tmp_path / "out" / "report" / "errors.jsonl") as f:
        (row,) = [json.loads(line) for line in f]
    assert (row["image_id"], row["reason"], row["field"]) == (9, "image_missing", "file_name")


def test_example_bytes_are_a_tf_train_example():
    import tensorflow as tf

    from data import features as F

    record = {"image_id": 5, "file_name": "x.png", "height": 10, "width": 20,
              "objects": [{"id": 9, "category_id": 3, "bbox": [2.0, 1.0, 4.0, 5.0], "area": 12.5, "iscrowd": 0,
                           "polygons": [[2, 1, 6, 1, 6, 6]], "rle": None, "keypoints": None}],
              "captions": [{"text": "a car", "ids": [7, 8, 9]}]}
    ours = F.encode_example(record, b"\x89PNG", "png", 2).SerializeToString()
    expected = tf.train.Example(features=tf.train.Features(feature={
        F.IMAGE_ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x89PNG"])),
        F.OBJECT_BBOX: tf.train.Feature(float_list=tf.train.FloatList(value=[0.1, 0.1, 0.6, 0.3])),
        F.CAPTION_IDS: tf.train.Feature(int64_list=tf.train.Int64List(value=[7, 8, 9])),
    }))
    parsed = tf.train.Example.FromString(ours)
    for key, feature in expected.features.feature.items():
        assert parsed.features.feature[key] == feature
    assert len(parsed.features.feature) == 19
    tensors = tf.io.parse_single_example(ours, F.FEATURE_SPEC)
    assert tensors[F.IMAGE_ID].numpy() == 5
    assert tf.sparse.to_dense(tensors[F.OBJECT_KEYPOINTS]).numpy().tolist() == [0.0] * 6
    assert F.decode_example(ours)[F.POLYGON_PART] == [0, 0, 0]


def test_beam_workers_do_not_import_tensorflow():
    """The DoFn's modules stay TensorFlow-free, so worker processes start fast."""
    import subprocess
    import sys

    code = ("import sys; import components.beam_ingest, data.features, data.image_io, data.coco; "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0


def test_annotation_files_are_parsed_once_per_run(tmp_path, monkeypatch):
    """The driver parses each JSON once; no element or worker reads annotation files."""
    import apache_beam as beam

    from data import coco

    root = str(tmp_path / "coco")
    tiny_coco.make_valid(root, num_images=6)
    tiny_coco.make_valid(root, suffix="val", num_images=2)
    reads = []
    real = coco._read_json
    monkeypatch.setattr(coco, "_read_json", lambda path: reads.append(os.path.basename(path)) or real(path))
    dirs = [str(tmp_path / d) for d in ("examples", "vocabulary", "report")]
    summary = beam_ingest.run_ingest(root, *dirs, make_pipeline=beam.Pipeline, caption_vocab_size=40)
    assert summary["images_written"] == {"train": 6, "eval": 2}
    assert sorted(reads) == sorted(f"{kind}_{split}.json" for kind in ("instances", "person_keypoints", "captions")
                                   for split in ("train", "val"))
