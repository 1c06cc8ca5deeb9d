"""Warm start: a new training run begins from another model's weights.

`warm_start(model, source_dir)` copies the weights of a model saved by
`training.save_model` (`pix2seq train` or `pix2seq import-checkpoint` output:
`model.weights.h5` + `model_config.json`) into a freshly built model, variable by
variable (matched by their path inside the model):

- same shape: loaded;
- the vocabulary-sized or length-sized tables (token embedding, output bias, learned
  decoder positions) with another size: the overlapping rows are copied, the rest keep
  their initial values ("reshaped"; e.g. a 3,000-token detection checkpoint into a
  model with a caption range, or a longer decoder);
- in one model only: skipped (reported);
- caption tokens, when both runs' SentencePiece vocabularies are known and differ (each
  ingestion trains its own, so two data sets give two piece orders): the rows of the
  token embedding and output bias are taken by piece text, so a caption token keeps
  its meaning; pieces the source lacks keep their initial values ("remapped").

Optimizer state and the step are not copied: the run starts at step 0 with a fresh
schedule. A different architecture (widths, depths, heads, patch size, stem or
position options) is refused before anything is assigned: such weights would load
only partly, or compute another function.
"""
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

import pix2seq  # noqa: F401  (Keras 3 guard)
from model.caption_tokenizer import load_pieces
from model.config import ModelConfig
from model.datasets import CAPTION_MODEL  # a warm-start source keeps its caption vocabulary under this name
from model.training import CONFIG_FILE, load_model
from model.vocab import CAPTION_UNK_PIECE, TEXT_OFFSET

ARCHITECTURE_FIELDS = ("encoder_dim", "encoder_depth", "encoder_heads", "encoder_mlp_dim", "decoder_dim",
                       "decoder_depth", "decoder_heads", "decoder_mlp_dim", "patch_size", "stem", "stem_norm",
                       "sincos_grid")
# Tables whose leading axis is a vocabulary or a length, not an architecture choice.
RESIZABLE = ("decoder/token_embedding/embeddings", "decoder/output_bias", "decoder/position_embedding")
# Tables with one row per token id: caption rows follow the pieces' text.
TOKEN_TABLES = ("decoder/token_embedding/embeddings", "decoder/output_bias")


def caption_row_map(source_pieces, target_pieces):
    """{target token id: source token id} for the caption pieces both vocabularies have.

    Pad, EOS and unknown have fixed piece ids (model/vocab.py); the others match by text."""
    first = {}
    for i, piece in enumerate(source_pieces):
        if i > CAPTION_UNK_PIECE:
            first.setdefault(piece, i)
    rows = {TEXT_OFFSET + i: TEXT_OFFSET + i for i in range(min(CAPTION_UNK_PIECE + 1, len(source_pieces)))}
    rows.update({TEXT_OFFSET + j: TEXT_OFFSET + first[piece] for j, piece in enumerate(target_pieces)
                 if j > CAPTION_UNK_PIECE and piece in first})
    return rows


class ArchitectureMismatchError(ValueError):
    """The warm-start source has another architecture than the model being trained."""


@dataclasses.dataclass(frozen=True)
class WarmStartReport:
    loaded: tuple
    reshaped: tuple
    skipped: tuple

    def summary(self) -> str:
        text = f"warm start: {len(self.loaded)} variables loaded, {len(self.reshaped)} reshaped"
        if self.reshaped:
            text += f" ({', '.join(self.reshaped)})"
        return text + f", {len(self.skipped)} skipped" + (f" ({', '.join(self.skipped)})" if self.skipped else "")


def _relative(variable):
    """A variable's path inside its model (the model's own, instance-numbered name cut)."""
    return variable.path.split("/", 1)[1]


def check_architecture(source_config, target_config):
    """Raises ArchitectureMismatchError listing every architecture field that differs."""
    differ = [f"{f}: {getattr(source_config, f)!r} vs {getattr(target_config, f)!r}"
              for f in ARCHITECTURE_FIELDS if getattr(source_config, f) != getattr(target_config, f)]
    if differ:
        raise ArchitectureMismatchError(
            "the warm-start source has another architecture (source vs model): " + "; ".join(differ))


def _remap_caption_rows(value, variable, rows):
    """`variable`'s initial value with the non-caption rows of `value` and its caption rows by `rows`."""
    merged = np.array(variable.numpy())
    fixed = min(TEXT_OFFSET, value.shape[0], merged.shape[0])
    merged[:fixed] = value[:fixed]
    for ours, theirs in rows.items():
        if ours < merged.shape[0] and theirs < value.shape[0]:
            merged[ours] = value[theirs]
    return merged


def copy_weights(source, target, caption_rows=None) -> WarmStartReport:
    """Copies `source`'s weights into `target` (both built `Pix2SeqModel`s) by the rules above.

    Weights, not only trainable ones: the conv stem's BatchNorm moving statistics are what
    inference normalizes with, so a model without them predicts garbage until training has
    re-estimated them (optimizer slots and RNG states are not weights and stay behind).

    `caption_rows`: `caption_row_map` of the two caption vocabularies, or None when they
    are the same (or unknown)."""
    check_architecture(source.config, target.config)
    theirs = {_relative(v): v for v in source.weights}
    ours = {_relative(v): v for v in target.weights}
    plan, reshaped, problems = [], [], []
    for path, variable in ours.items():
        if path not in theirs:
            continue
        value = np.asarray(theirs[path].numpy())
        if caption_rows is not None and path in TOKEN_TABLES and value.shape[1:] == tuple(variable.shape[1:]):
            plan.append((variable, _remap_caption_rows(value, variable, caption_rows)))
            matched = sum(1 for r in caption_rows if r < variable.shape[0]) - CAPTION_UNK_PIECE - 1
            pieces = variable.shape[0] - TEXT_OFFSET - CAPTION_UNK_PIECE - 1
            reshaped.append(f"{path} {tuple(value.shape)}->{tuple(variable.shape)} remapped: "
                            f"{matched} of {pieces} caption pieces by text")
        elif tuple(value.shape) == tuple(variable.shape):
            plan.append((variable, value))
        elif path in RESIZABLE and value.shape[1:] == tuple(variable.shape[1:]):
            rows = min(value.shape[0], variable.shape[0])
            merged = np.array(variable.numpy())
            merged[:rows] = value[:rows]
            plan.append((variable, merged))
            reshaped.append(f"{path} {tuple(value.shape)}->{tuple(variable.shape)}")
        else:
            problems.append(f"{path}: {tuple(value.shape)} vs {tuple(variable.shape)}")
    if problems:
        raise ArchitectureMismatchError("warm start: weights of another shape: " + "; ".join(problems))
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype))
    skipped = sorted(set(ours) ^ set(theirs))
    loaded = tuple(_relative(v) for v, _ in plan if not any(r.startswith(_relative(v) + " ") for r in reshaped))
    return WarmStartReport(loaded=loaded, reshaped=tuple(reshaped), skipped=tuple(skipped))


def warm_start(model, source_dir, caption_model=None) -> WarmStartReport:
    """Loads the model saved in `source_dir` (`training.save_model` layout) into `model`.

    `caption_model`: the SentencePiece model `model` is trained with; when `source_dir`
    has its own (CAPTION_MODEL) with other pieces, caption rows are remapped by text."""
    rows = None
    source_captions = os.path.join(source_dir, CAPTION_MODEL)
    if caption_model and tf.io.gfile.exists(source_captions):
        theirs, ours = load_pieces(source_captions), load_pieces(caption_model)
        if theirs != ours:
            rows = caption_row_map(theirs, ours)
    return copy_weights(load_model(source_dir), model, rows)


def source_config(source_dir) -> ModelConfig:
    """The `ModelConfig` saved in `source_dir`: a run warm-started from it keeps its architecture."""
    with tf.io.gfile.GFile(os.path.join(source_dir, CONFIG_FILE)) as f:
        return ModelConfig.from_dict(json.load(f)["model"])
