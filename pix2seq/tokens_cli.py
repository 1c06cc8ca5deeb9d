"""`pix2seq tokens`: show one image's token sequence for a task, the way training sees it.

The image goes through the same path as evaluation data: COCO JSON record
(data/coco.py) -> tf.train.Example (data/features.py) -> parsed dict (data/parse.py)
-> the task's eval-mode preparation on the canvas (`Task.prepare_eval`) -> the task codec's
`build_sequences` (model/tasks). The target is decoded back and reported in canvas
coordinates and in original-image pixels (COCO conventions), so a user can check that
annotations survive the trip.
"""
import argparse
import json
import sys
import tempfile

RENDER_NAMES = {0: "<eos>", 10: "<det>", 11: "<seg>", 12: "<kpt>", 13: "<cap>", 30: "<fake>",
                40: "<sep>", 41: "<invisible>"}


def add_arguments(parser):
    parser.add_argument("--coco-dir", required=True, help="COCO-format directory (e.g. `pix2seq synth` output)")
    parser.add_argument("--split", default="val", help="train or val (default val)")
    parser.add_argument("--image-id", type=int, required=True, help="COCO image id")
    from model.tasks import task_names

    parser.add_argument("--task", required=True, choices=task_names())
    parser.add_argument("--instance", type=int, default=0,
                        help="segmentation/keypoints: which eligible object; captioning: which caption (default 0)")
    parser.add_argument("--preset", default="base", help="model preset giving the token sizes (default base)")
    parser.add_argument("--image-size", type=int, default=None, help="canvas side (default: the preset's)")
    parser.add_argument("--vocab-file", default=None,
                        help="SentencePiece model for captions (default: train one on the train captions)")
    parser.add_argument("--augment", action="store_true",
                        help="apply the codec's training augmentation (detection noise objects, class corruption)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --augment (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


class TokensError(Exception):
    """A user-facing problem with the request (bad split, id, instance)."""


def _split_name(split):
    from data import coco

    name = coco.split_for_suffix(split) or ("eval" if split == "eval" else None)
    if name is None:
        raise TokensError(f"--split must be train or val. Received: {split!r}")
    return name


def _find_record(data, split, image_id):
    records = data.splits.get(split)
    if records is None:
        raise TokensError(f"the COCO directory has no {split} split (found: {sorted(data.splits)})")
    for record in records:
        if int(record["image_id"]) == image_id:
            return record
    raise TokensError(f"image id {image_id} is not in the {split} split")


def _caption_model(data, vocab_file, vocab_size):
    if vocab_file:
        return vocab_file
    from model import caption_tokenizer

    captions = [c["text"] for r in data.splits.get("train") or data.splits.get("eval", []) for c in r["captions"]]
    if not captions:
        raise TokensError("no captions to train a caption vocabulary on; pass --vocab-file")
    out = tempfile.mkdtemp(prefix="pix2seq_tokens_spm_")
    return caption_tokenizer.train_sentencepiece(captions, f"{out}/captions", vocab_size)


def _prepared(args, data, record, codec):
    """The record as the task codec's input (the codec's own eval canvas), plus the
    canvas -> image mapping."""
    import tensorflow as tf

    from data import features, image_io, parse

    image = image_io.load_image(image_io.resolve_image_path(data.image_dirs[args.split_name], record["file_name"]),
                                record["height"], record["width"])
    serialized = features.encode_example(record, image.encoded, image.format, data.num_keypoints)
    example = parse.parse_example(tf.constant(serialized.SerializeToString()), data.num_keypoints)
    if codec.eval_per_instance:
        candidates = codec.eval_candidates(example).numpy()
        if not 0 <= args.instance < len(candidates):
            raise TokensError(f"image {record['image_id']} has {len(candidates)} {args.task} instance(s); "
                              f"--instance {args.instance} is out of range")
        index = object_index = int(candidates[args.instance])
    else:
        index, object_index = args.instance, None
        if codec.uses_text_pieces and not 0 <= index < len(record["captions"]):
            raise TokensError(f"image {record['image_id']} has {len(record['captions'])} caption(s); "
                              f"--instance {index} is out of range")
    prepared = codec.prepare_eval(example, index)
    inputs = codec.codec_inputs(prepared)
    # canvas coordinate c (normalized) -> original pixels: c * S / canvas_scale + canvas_offset
    to_pixels = (float(codec.config.image_size) / prepared["canvas_scale"].numpy(),
                 prepared["canvas_offset"].numpy())
    return inputs, to_pixels, object_index


def render_tokens(tokens, categories=None, pieces=None, num_bins=1000, class_ids=()):
    """Token ids -> readable strings; runs of coordinates alternate y=, x=; a class token
    shows its category's name (`class_ids`: the class map, data/dataset_info.py)."""
    from data import dataset_info

    from model import vocab

    out, coord_run = [], 0
    for t in (int(t) for t in tokens):
        if vocab.COORD_OFFSET <= t < vocab.COORD_OFFSET + num_bins:
            axis = "y" if coord_run % 2 == 0 else "x"
            out.append(f"{axis}={(t - vocab.COORD_OFFSET) / (num_bins - 1):.3f}")
            coord_run += 1
            continue
        coord_run = 0
        if t >= vocab.TEXT_OFFSET:
            piece = t - vocab.TEXT_OFFSET
            out.append("<eos>" if t == vocab.CAPTION_EOS else
                       (repr(pieces[piece]) if pieces and piece < len(pieces) else f"<text:{piece}>"))
        elif vocab.CLASS_OFFSET < t < vocab.COORD_OFFSET:
            cid = dataset_info.category_id(class_ids, t - vocab.CLASS_OFFSET) if class_ids else t - vocab.CLASS_OFFSET
            out.append(f"<cls:{(categories or {}).get(cid, cid)}>")
        else:
            out.append(RENDER_NAMES.get(t, f"<{t}>"))
    return out


def run(args):
    """Everything `main` prints, as a dict (also what --json writes)."""
    import dataclasses

    import numpy as np

    from data import coco, dataset_info
    from model import config as config_lib
    from model.tasks import get_task, supported_tasks, task_class
    from model.tasks.base import rounded
    from model.datasets import dataset_token_fields

    args.split_name = _split_name(args.split)
    data = coco.load_coco_dir(args.coco_dir)
    record = _find_record(data, args.split_name, args.image_id)
    # the class map and keypoint schema ingestion would infer (any category ids, any schema)
    inferred = dataset_info.info_fields(data.categories, data.splits.get("train") or [record], supported_tasks)
    class_ids = tuple(inferred["class_category_ids"])
    to_class = dataset_info.class_index(class_ids)
    for obj in record["objects"]:
        obj["class"] = to_class(obj["category_id"])
    tokens = config_lib.preset(args.preset, **dataset_token_fields(inferred)).tokens
    if args.image_size:
        tokens = dataclasses.replace(tokens, image_size=args.image_size)
    if data.num_keypoints != tokens.num_keypoints:
        tokens = dataclasses.replace(tokens, num_keypoints=data.num_keypoints, keypoint_flip_pairs=())
    pieces, task_kwargs = None, {}
    for caption in record["captions"]:
        caption["ids"] = []  # piece ids only matter (and only get computed) for captioning
    text = task_class(args.task).uses_text_pieces
    if text:
        from model import caption_tokenizer

        model_path = _caption_model(data, args.vocab_file, tokens.caption_vocab_size)
        pieces = caption_tokenizer.load_pieces(model_path)
        tokens = dataclasses.replace(tokens, caption_vocab_size=max(tokens.caption_vocab_size, len(pieces)))
        task_kwargs["pieces"] = pieces
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=model_path)
        for caption in record["captions"]:
            caption["ids"] = sp.encode(caption["text"])
    task = get_task(args.task, tokens, **task_kwargs)
    inputs, to_pixels, object_index = _prepared(args, data, record, task)
    seqs = {k: v.numpy() for k, v in task.build_sequences(inputs, args.seed, augment=args.augment).items()}
    prompt = seqs["input_tokens"][:task.prompt_length]
    response = seqs["target_tokens"][task.prompt_length - 1:]
    categories = {int(c["id"]): c.get("name", str(c["id"])) for c in data.categories}
    render = lambda t: render_tokens(t, categories, pieces, tokens.num_bins, class_ids)  # noqa: E731
    used = int(np.max(np.nonzero(seqs["token_weights"])[0], initial=-1)) + 1
    out = {
        "task": args.task, "image_id": args.image_id, "split": args.split, "image_size": tokens.image_size,
        "pixels_per_canvas": rounded(to_pixels[0], 4),  # image pixels spanned by the canvas (y, x)
        "prompt": prompt.tolist(), "input": seqs["input_tokens"].tolist(),
        "target": seqs["target_tokens"].tolist(), "weights": rounded(seqs["token_weights"], 4),
        "rendered": {"prompt": render(prompt), "target": render(seqs["target_tokens"][:used])},
        "decoded": task.describe_target(response, to_pixels, class_ids),  # what the tokens mean
    }
    if object_index is not None:
        out["annotation_id"] = int(record["objects"][object_index]["id"])
    if text:
        out["caption"] = record["captions"][args.instance]["text"]
    return out


def format_text(out):
    lines = [f"{out['task']}: image {out['image_id']} ({out['split']}), canvas {out['image_size']}"
             + (f", annotation {out['annotation_id']}" if "annotation_id" in out else ""),
             "prompt:  " + " ".join(out["rendered"]["prompt"])]
    if "caption" in out:
        lines.append(f"caption: {out['caption']}")
    lines.append(f"{'pos':>4}  {'input':>6}  {'target':>6}  {'weight':>6}  rendering (target)")
    rendered = out["rendered"]["target"]
    for i, (inp, tok, w, r) in enumerate(zip(out["input"], out["target"], out["weights"], rendered)):
        lines.append(f"{i:>4}  {inp:>6}  {tok:>6}  {w:>6g}  {r}")
    rest = len(out["target"]) - len(rendered)
    if rest:
        lines.append(f"      (+{rest} padding tokens, weight 0)")
    lines.append("decoded: " + json.dumps(out["decoded"]))
    return "\n".join(lines)


def main(args) -> int:
    try:
        out = run(args)
    except (TokensError, FileNotFoundError, ValueError) as err:  # DatasetError is a ValueError
        print(f"pix2seq tokens: {err}", file=sys.stderr)
        return 2
    print(json.dumps(out) if args.json else format_text(out))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="pix2seq tokens")
    add_arguments(p)
    sys.exit(main(p.parse_args()))
