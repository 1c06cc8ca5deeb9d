"""Regenerates tests/data/official_tiny/: a tiny Pix2Seq built, run and saved by the official code.

The parity test (tests/test_official_import.py) imports this checkpoint with
`pix2seq import-checkpoint` machinery and must reproduce the official model's
encoder output, teacher-forced logits and greedy detection tokens. This script is
the only place the official code runs; it is not part of the package and nothing
imports it.

What it writes (all from the official google-research/pix2seq code, imported from the
path given by --official):
  ckpt-1.*, checkpoint     the TF checkpoint, saved as the official Trainer saves it
                           (`tf.train.Checkpoint(model=, global_step=, optimizer=)`),
                           AdamW slots included
  fixture.npz              image_png (raw encoded image), canvas (official eval
                           preprocessing: antialiased resize + pad 0.3), vit_output
                           (VisionTransformer output), memory (image projection output),
                           tokens (fixed teacher-forcing sequence) and logits, greedy_tokens
                           (`infer` with top_k=1 after prompt [10]) and greedy_margin
                           (smallest top-1 minus top-2 logit over the greedy steps)
  official_config.json     the official `config.model` used
  official_variables.txt   `tf.train.list_variables` of the checkpoint

The model is the official `encoder_ar_decoder` (ViT encoder, `proj` + `proj_mlp`,
AutoregressiveDecoder) at a tiny size with the detection-only 3,000-token vocabulary.
Weights are the official random initialization (seed 0) plus seeded noise on every
variable, so that biases, LayerNorm scales/offsets and the output bias are not their
trivial initial values (a swapped or dropped one would otherwise go unnoticed), and a
larger token and position embedding so that greedy choices are decisive and vary
along the sequence.

Environment used for the committed fixture (a scratch virtualenv, not the project's):
  Python 3.10.13; tensorflow-cpu 2.15.1 (tf.keras is Keras 2.15); tensorflow-addons 0.23.0;
  ml-collections 1.1.0; einops 0.8.2; matplotlib 3.10.9; numpy 1.26.4.
  Official code: google-research/pix2seq at eabd4e98f65f7627a0e727d11a4b9cbba916283d.

Usage:
  python tools/official_fixture.py --official /path/to/pix2seq --out tests/data/official_tiny
"""
import argparse
import io
import json
import os
import sys

import numpy as np

SEED = 0
RAW_HEIGHT, RAW_WIDTH = 72, 120  # a non-square image: the canvas gets resized and padded

MODEL = dict(
    name="encoder_ar_decoder",
    image_size=(64, 64),
    patch_size=16,
    resnet_variant="c1",
    num_encoder_layers=2,
    dim_att=64,
    dim_mlp=128,
    num_heads=4,
    num_decoder_layers=2,
    dim_att_dec=32,
    dim_mlp_dec=64,
    num_heads_dec=2,
    max_seq_len=64,
    vocab_size=3000,
    coord_vocab_shift=1000,
    text_vocab_shift=3000,
    use_cls_token=False,
    shared_decoder_embedding=True,
    decoder_output_bias=True,
    drop_path=0.1,
    drop_units=0.1,
    drop_att=0.0,
    dec_proj_mode="mlp",
    pos_encoding="sin_cos",
    pos_encoding_dec="learned",
)
OPTIMIZATION = dict(optimizer="adamw", learning_rate=1e-4, weight_decay=0.05, beta1=0.9, beta2=0.95,
                    eps=1e-8, global_clipnorm=-1.0)
MAX_INSTANCES = 10  # greedy decoding runs 5 * 10 tokens after the prompt, as the official detection task


def synthetic_image(rng):
    """uint8 [H, W, 3]: smooth gradients plus a few flat rectangles (PNG keeps it exact)."""
    y, x = np.mgrid[0:RAW_HEIGHT, 0:RAW_WIDTH].astype(np.float32)
    image = np.stack([x / RAW_WIDTH, y / RAW_HEIGHT, 0.5 + 0.5 * np.sin(x / 7.0 + y / 11.0)], -1)
    for _ in range(4):
        y0, x0 = rng.integers(0, RAW_HEIGHT - 10), rng.integers(0, RAW_WIDTH - 10)
        image[y0:y0 + rng.integers(5, 30), x0:x0 + rng.integers(5, 40)] = rng.uniform(0, 1, 3)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def detection_sequence(rng, length):
    """A detection-shaped input sequence: prompt 10, objects (4 coordinates + class), then padding."""
    tokens = [10]
    for _ in range(6):
        tokens += list(rng.integers(1000, 2000, 4)) + [int(rng.integers(101, 191))]
    tokens += [0] * (length - len(tokens))
    return np.asarray(tokens[:length], np.int32)


def perturb(tf, model, rng):
    """Moves every variable off its trivial initial value (see module docstring)."""
    for v in model.variables:
        shape = v.shape.as_list()
        if v.name.endswith(("token_embedding:0", "seq_pos_embedding:0")):
            value = rng.normal(0.0, 1.0, shape)
        else:
            value = v.numpy() + rng.normal(0.0, 0.1 if len(shape) == 1 else 0.02, shape)
        v.assign(value.astype(np.float32))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", required=True, help="path of a google-research/pix2seq checkout")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.official))

    import ml_collections
    import tensorflow as tf
    import utils as official_utils
    from data import decode_utils, transforms
    from models import ar_model, model_utils

    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    tf.keras.utils.set_random_seed(SEED)
    config = ml_collections.ConfigDict({"model": MODEL, "optimization": OPTIMIZATION})
    model = ar_model.Model(config)

    # Eval preprocessing as the official detection eval transforms do it.
    raw = synthetic_image(rng)
    png = tf.io.encode_png(raw).numpy()
    example = {"image": decode_utils.decode_image({"image/encoded": png})}
    size = list(MODEL["image_size"])
    example = transforms.TransformRegistry.lookup("resize_image")(
        ml_collections.ConfigDict({"inputs": ["image"], "antialias": [True], "target_size": size})
    ).process_example(example)
    example = transforms.TransformRegistry.lookup("pad_image_to_max_size")(
        ml_collections.ConfigDict({"inputs": ["image"], "target_size": size})
    ).process_example(example)
    canvas = example["image"][None]

    seq_len = 5 * MAX_INSTANCES + 1
    tokens = tf.constant(detection_sequence(rng, seq_len)[None])
    model(canvas, tokens, training=False)  # builds every variable
    perturb(tf, model, rng)

    vit_output = model.encoder(canvas, training=False)
    memory = model._encode_images(canvas, training=False)
    logits = model(canvas, tokens, training=False)
    prompt = tf.constant([[10]], tf.int64)  # the official prompt dtype
    greedy, greedy_logits, _ = model.infer(canvas, prompt, max_seq_len=seq_len, temperature=1.0, top_k=1,
                                           top_p=1.0)
    top2 = tf.math.top_k(greedy_logits[0], k=2).values.numpy()

    optimizer = model_utils.build_optimizer(config.optimization, config.optimization.learning_rate)
    optimizer.build(model.trainable_variables)  # slots exist, as in every released checkpoint
    _, checkpoint, _ = official_utils.restore_from_checkpoint(
        args.out, False, model=model, global_step=optimizer.iterations, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, args.out, max_to_keep=1)
    path = manager.save(checkpoint_number=1)

    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        image_png=np.frombuffer(png, np.uint8),
        canvas=canvas.numpy()[0],
        vit_output=vit_output.numpy()[0],
        memory=memory.numpy()[0],
        tokens=tokens.numpy()[0],
        logits=logits.numpy()[0],
        greedy_tokens=greedy.numpy()[0].astype(np.int32),
        greedy_margin=np.float32((top2[:, 0] - top2[:, 1]).min()),
    )
    with open(os.path.join(args.out, "fixture.npz"), "wb") as f:
        f.write(buffer.getvalue())
    with open(os.path.join(args.out, "official_config.json"), "w") as f:
        json.dump(config.model.to_dict(), f, indent=1, sort_keys=True)
    with open(os.path.join(args.out, "official_variables.txt"), "w") as f:
        for name, shape in tf.train.list_variables(path):
            f.write(f"{name}\t{shape}\n")
    print(f"wrote {path}; greedy tokens {greedy.numpy()[0].tolist()}; "
          f"smallest greedy margin {float((top2[:, 0] - top2[:, 1]).min()):.4f}")


if __name__ == "__main__":
    main()
