"""Every task learns: the tiny preset memorizes a handful of synthetic images, scored
the way a user scores a model — through the exported SavedModel and the COCO metrics.

Data path: `pix2seq synth` -> Beam ingestion -> model/input_pipelines.py sequences of every
image, instance, person and first caption (unaugmented, so the targets are fixed) ->
`training.train` with batch mixing -> `export_saved_model` -> the steps of
`pix2seq evaluate` on the same images (pix2seq/evaluate.py reads them, the shared
components/coco_evaluator/evaluation.py runs `detect_and_describe` with the paper's
decoding and model/results.py turns its outputs into COCO results).

Bars (issue 14): bbox AP >= 0.8, segm AP >= 0.5, keypoint AP >= 0.5, most captions
exact. Segmentation and keypoints run on the *detected* boxes, as in serving.
Run as a script (`python tests/test_memorize.py [STEPS]`) it prints the metrics and
the time of each phase.
"""
import os
import time

import pytest

NUM_IMAGES = 6
STEPS = 120
MAX_INSTANCES = 5  # most instances on one of these images: each image's segmentation rows
SYNTH_SEED = 4
TASKS = ("detection", "segmentation", "keypoints", "captioning")
TASK_WEIGHTS = {"detection": 1.0, "segmentation": 1.0, "keypoints": 1.0, "captioning": 1.0}


def fixed_batches(files, token_config):
    """`{task: one batch of every unaugmented training element}` as tensors: each image's
    detection sequence and first caption, each person's keypoints (on its 2x crop), and
    all instances of an image as the rows of one segmentation element (the paper's
    several instances per image, [B, K, L]: the image is encoded once for its K rows)."""
    import tensorflow as tf

    from data import parse
    from model import input_pipelines as pipelines
    from model.tasks import get_task

    out = {}
    for task in ("detection", "keypoints", "captioning"):
        elements = list(pipelines.eval_examples(files, task, token_config))
        out[task] = {k: tf.stack([e[k] for e in elements]) for k in elements[0]}
    codec = get_task("segmentation", token_config)
    rows = []
    for record in parse.record_dataset(files):
        example = parse.decode_parsed(parse.parse_example(record, token_config.num_keypoints, decode_image=False))
        if not bool(codec.usable(example)):
            continue
        canvas = get_task("detection", token_config).prepare_eval(example)  # the whole image, crowds dropped
        seqs = codec.build_image_sequences(codec.codec_inputs(canvas, per_image=True), 0)
        rows.append(dict(seqs, image=canvas["image"]))
    out["segmentation"] = {k: tf.stack([r[k] for r in rows]) for k in rows[0]}
    return out


def memorize(work_dir, steps=STEPS, num_images=NUM_IMAGES, log=print):
    """Synth -> ingest -> train on all of it -> export -> COCO evaluation of the same images.

    Returns (metrics, per-image results, records, phase times in seconds, (model, batches))."""
    import apache_beam as beam
    import tensorflow as tf

    from components import beam_ingest
    from components.coco_evaluator import evaluation, model_runner
    from data import synth
    from model import export, train_data
    from model.training import TrainConfig, train
    from pix2seq import evaluate as evaluate_cli

    times = {}
    start, cpu = time.time(), time.process_time()
    coco_dir = os.path.join(work_dir, "synth")
    synth.generate(coco_dir, num_train=num_images, num_val=1, image_size=128, seed=SYNTH_SEED)
    examples = os.path.join(work_dir, "examples")
    beam_ingest.run_ingest(coco_dir, examples, os.path.join(work_dir, "vocab"), os.path.join(work_dir, "report"),
                           make_pipeline=beam.Pipeline, caption_vocab_size=1000)
    # Long enough for every synthetic caption (the tiny preset's 32 cuts the longest ones);
    # every instance of an image in its segmentation rows.
    config = train_data.model_config_for("tiny", examples, dropout=0.0, drop_path=0.0, max_caption_len=64,
                                         segmentation_instances_per_image=MAX_INSTANCES)
    batches = fixed_batches(train_data.split_pattern(examples, "train"), config.tokens)
    instances = int(tf.reduce_sum(tf.cast(tf.reduce_sum(batches["segmentation"]["token_weights"], -1) > 0, tf.int32)))
    log({task: int(b["image"].shape[0]) for task, b in batches.items()}, "instances:", instances)
    times["data"] = time.time() - start

    start = time.time()
    settings = TrainConfig(steps=steps, batch_size=num_images, learning_rate=2e-3, warmup_steps=20,
                           weight_decay=0.0, task_weights=TASK_WEIGHTS, checkpoint_every=steps // 3, seed=0)
    result = train(config, settings, os.path.join(work_dir, "train"),
                   lambda ctx, start_step: tf.data.Dataset.from_tensors(batches).repeat(), verbose=0)
    log({k: [round(float(x), 3) for x in v] for k, v in result.history.items()})
    times["train"] = time.time() - start

    start = time.time()
    model_dir = export.export_saved_model(result.model, os.path.join(work_dir, "export"),
                                          caption_vocab_file=train_data.caption_model_file(examples),
                                          signatures=model_runner.signatures_for(TASKS, with_options=False))
    times["export"] = time.time() - start

    start = time.time()
    records, image_dir, categories, num_keypoints = evaluate_cli.load_split(coco_dir, "train")
    decoded, skipped = evaluate_cli.decode_images(records, image_dir, num_keypoints)
    assert not skipped and len(decoded) == num_images
    gt = evaluation.ground_truth(decoded, categories)
    options = evaluation.EvalOptions(tasks=TASKS, batch_size=num_images,
                                     keypoint_category_ids=gt.keypoint_category_ids)
    per_image = evaluation.predict(model_runner.ModelRunner(model_dir, TASKS), decoded, options)
    metrics, _ = evaluation.score(gt, per_image, TASKS)
    times["evaluate"] = time.time() - start
    times["cpu"] = time.process_time() - cpu
    num_instances = sum(1 for r in records for o in r["objects"] if not o.get("iscrowd"))
    assert instances == num_instances, f"{instances} of {num_instances} instances trained: raise MAX_INSTANCES"
    return metrics, per_image, records, times, (result.model, batches)


def exact_captions(per_image, records):
    """How many images got exactly their first reference caption (the one trained on)."""
    def norm(text):
        return " ".join(text.lower().replace(".", " .").split())

    truth = {r["image_id"]: norm(r["captions"][0]["text"]) for r in records}
    return sum(norm(p.get("caption", "")) == truth[p["image_id"]] for p in per_image)


@pytest.mark.slow
def test_tiny_memorizes_every_task_through_the_export_and_the_coco_metrics(tmp_path):
    import numpy as np

    import reference_decoding
    from model import decoding
    from model.vocab import DETECTION_PROMPT

    metrics, per_image, records, times, (model, batches) = memorize(str(tmp_path))
    # On trained weights too, the K/V-cached loop emits exactly the recompute-everything loop's tokens.
    images = batches["detection"]["image"]
    length = int(batches["detection"]["target_tokens"].shape[1])
    prompt = np.full((int(images.shape[0]), 1), DETECTION_PROMPT, np.int32)
    cached = decoding.generate(model, images, prompt, length, end_token=0)["tokens"].numpy()
    reference = reference_decoding.reference_decode(
        model.decoder, model.encode(images), prompt, length, end_token=0)["tokens"].numpy()
    np.testing.assert_array_equal(cached, reference)
    report = f"{metrics} in {times}"
    assert metrics["detection"]["AP"] >= 0.8, report
    assert metrics["segmentation"]["AP"] >= 0.5, report
    assert metrics["keypoints"]["AP"] >= 0.5, report
    exact = exact_captions(per_image, records)
    assert exact > NUM_IMAGES // 2, f"{exact} of {NUM_IMAGES} captions exact; {report}"


def keypoint_errors(per_image, records):
    """Per labelled person: mean pixel distance of its labelled keypoints to the prediction
    on the best-overlapping detected box (a diagnosis of the keypoint AP)."""
    import numpy as np

    out = []
    for p, r in zip(per_image, records):
        for obj in r["objects"]:
            kp = obj.get("keypoints")
            if not kp or obj.get("iscrowd"):
                continue
            truth = np.array(kp, float).reshape(-1, 3)
            x, y, w, h = obj["bbox"]
            best, best_iou = None, 0.0
            for o in p["objects"]:
                if "keypoints" not in o:
                    continue
                bx, by, bw, bh = o["bbox"]
                ix = max(0.0, min(x + w, bx + bw) - max(x, bx))
                iy = max(0.0, min(y + h, by + bh) - max(y, by))
                iou = ix * iy / (w * h + bw * bh - ix * iy)
                if iou > best_iou:
                    best, best_iou = o, iou
            if best is None:
                out.append((r["image_id"], None, 0.0))
                continue
            pred = np.array(best["keypoints"], float)[:, :2]
            seen = truth[:, 2] > 0
            out.append((r["image_id"], round(float(np.linalg.norm(pred[seen] - truth[seen, :2], axis=1).mean()), 2),
                        round(best_iou, 3)))
    return out


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        metrics, per_image, records, times, _ = memorize(tmp, int(sys.argv[1]) if len(sys.argv) > 1 else STEPS)
        print("keypoint errors (image, mean px, box IoU)", keypoint_errors(per_image, records))
        print({task: {k: metrics[task].get(k) for k in ("AP", "AP50", "CIDEr-D")} for task in metrics})
        print("exact captions", exact_captions(per_image, records), "of", len(records))
        for p in per_image:
            print(p["image_id"], repr(p.get("caption")), len(p["objects"]))
        print({k: round(v, 1) for k, v in times.items()})
