"""Keras quick start (docs/KERAS.md): synthetic COCO data -> a trained, evaluated, exported tiny model.

    python examples/quickstart.py [OUT] [STEPS]

tests/test_keras_quickstart.py runs `main` with a few steps and a smaller model.
"""
import json
import sys

import keras

from components.beam_ingest import ingest
from components.coco_metrics import coco_ap
from data import synth
from model import datasets
from model.export import export_saved_model
from model.generate import draw
from model.optimizer import build_optimizer
from model.pix2seq_model import Pix2SeqModel
from model.results import coco_results


def main(out="quickstart", steps=600, images=64, tasks=None, **overrides):
    # --8<-- [start:quickstart]
    synth.generate(f"{out}/coco", num_train=images, num_val=images // 4, seed=1)  # as `pix2seq synth`
    examples, _ = ingest(f"{out}/coco", f"{out}/ingested", caption_vocab_size=500)  # the pipeline's Beam code
    model = Pix2SeqModel.from_preset("tiny", examples=examples, **overrides)  # sized for this data
    train = datasets.examples_dataset(examples, model, tasks=tasks, batch_size=8)  # endless {task: batch}
    val = datasets.examples_dataset(examples, model, split="eval", tasks=tasks, batch_size=8)
    model.compile(optimizer=build_optimizer(model, 1e-3, total_steps=steps, warmup_steps=steps // 10))
    model.fit(train, validation_data=val, epochs=2, steps_per_epoch=steps // 2, callbacks=[
        keras.callbacks.ModelCheckpoint(f"{out}/best.keras", monitor="val_loss", save_best_only=True),
        keras.callbacks.TensorBoard(f"{out}/logs"),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)])
    model.save(f"{out}/model.keras")
    model = keras.saving.load_model(f"{out}/model.keras")  # weights, config, caption vocabulary

    gt = json.load(open(f"{out}/coco/annotations/instances_val.json"))
    files = [f"{out}/coco/images/val/{image['file_name']}" for image in gt["images"]]
    results = model.generate(files, task="detect")  # per-image results, as `pix2seq predict`
    print("box AP:", coco_ap(gt, coco_results(results)["bbox"], "bbox")["AP"])
    first = model.generate(files[0], task="all")[0]  # detect + masks + keypoints + caption
    draw(files[0], first).save(f"{out}/first.png")
    export_saved_model(model, f"{out}/export")  # the serving SavedModel `pix2seq serve` answers with
    # --8<-- [end:quickstart]
    return model, results


if __name__ == "__main__":
    main(*sys.argv[1:2], *map(int, sys.argv[2:3]))
