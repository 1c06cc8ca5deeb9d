"""Official Pix2Seq TF checkpoints -> our model, without the official code.

The released checkpoints (google-research/pix2seq: Objects365-pretrained and COCO
fine-tuned detection ViT-B / ViT-L, multi-task ViT-B) are object-graph checkpoints of
the official `encoder_ar_decoder` model. `tf.train.load_checkpoint` reads them by key;
`variable_map(model)` says which key each of our variables takes. Every ViT-encoder,
projection and decoder variable has a counterpart of the same shape once our model is
built with the official architecture options (`ModelConfig.stem_norm=True`,
`sincos_grid="2pi"`, and for its inputs `canvas_pad_value=0.3`, `resize_antialias=True`;
`OFFICIAL_CONFIGS`), so the import is a lookup and a copy:

| official key (under `model/`, `/.ATTRIBUTES/VARIABLE_VALUE` cut) | ours |
|---|---|
| `encoder/stem_conv/{kernel,bias}` | `encoder.patch_embedding` |
| `encoder/stem_ln/{gamma,beta}` | `encoder.patch_norm` (`stem_norm`) |
| `encoder/transformer_encoder/enc_layers/{i}/mha_ln` | `encoder.blocks[i].norm` |
| `encoder/transformer_encoder/enc_layers/{i}/mha/_{query,key,value,output}_dense` | `encoder.blocks[i].attention.{query,key,value,output_dense}` |
| `encoder/transformer_encoder/enc_layers/{i}/mlp/layernorms/0` | `encoder.blocks[i].mlp_block.norm` |
| `encoder/transformer_encoder/enc_layers/{i}/mlp/mlp_layers/0/dense{1,2}` | `encoder.blocks[i].mlp_block.mlp.fc{1,2}` |
| `encoder/output_ln` | `encoder.final_norm` |
| `proj`, `proj_ln`, `proj_mlp/...` | `projection.dense`, `projection.norm`, `projection.mlp_block` |
| `decoder/ar_decoder.Stoken_embedding` | `decoder.token_embedding` (shared input/output) |
| `decoder/ar_decoder.Sseq_pos_embedding` | `decoder.position_embedding` |
| `decoder/ar_decoder.Soutp_bias` | `decoder.output_bias` |
| `decoder/decoder/dec_layers/{i}/{self_ln,self_mha,cross_ln,cross_mha,mlp}` | `decoder.blocks[i].{self_norm,self_attention,cross_norm,cross_attention,mlp_block}` |
| `decoder/output_ln` | `decoder.final_norm` |

Dropped on purpose: optimizer state (`optimizer/...`, `.OPTIMIZER_SLOT`), the step and
save counters, the object graph. Anything else left over, or a mapped key that is
missing or has another shape, is an error that names it. ResNet-encoder checkpoints
are refused ("not supported"). Parity with the official model's outputs:
tests/test_official_import.py on the fixture that tools/official_fixture.py made.
"""
import dataclasses

import numpy as np
import tensorflow as tf

import pix2seq  # noqa: F401  (Keras 3 guard)
from model import config as config_lib
from model.vocab import TokenConfig

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
DROPPED_KEYS = ("global_step", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH")
OFFICIAL_OPTIONS = dict(stem_norm=True, sincos_grid="2pi", canvas_pad_value=0.3, resize_antialias=True)


class UnsupportedCheckpointError(ValueError):
    """The checkpoint is an official model this project cannot represent (e.g. a ResNet encoder)."""


class CheckpointMismatchError(ValueError):
    """The checkpoint and the model config disagree (a missing, extra or mis-shaped variable)."""


def _vit(name, image_size, dim, depth, heads, mlp, decoder_depth, caption_vocab_size):
    tokens = TokenConfig(image_size=image_size, caption_vocab_size=caption_vocab_size)
    return config_lib.ModelConfig(
        name=name, tokens=tokens, encoder_dim=dim, encoder_depth=depth, encoder_heads=heads, encoder_mlp_dim=mlp,
        decoder_dim=512, decoder_depth=decoder_depth, decoder_heads=16, decoder_mlp_dim=2048, max_seq_len=512,
        **OFFICIAL_OPTIONS)


def _official_tiny():
    """The size of tests/data/official_tiny (tools/official_fixture.py)."""
    tokens = TokenConfig(image_size=64, max_instances=10, max_polygon_points=16, caption_vocab_size=0,
                         max_caption_len=32)
    return config_lib.ModelConfig(
        name="official-tiny", tokens=tokens, encoder_dim=64, encoder_depth=2, encoder_heads=4, encoder_mlp_dim=128,
        decoder_dim=32, decoder_depth=2, decoder_heads=2, decoder_mlp_dim=64, max_seq_len=64, **OFFICIAL_OPTIONS)


# The released ViT checkpoints (README of google-research/pix2seq): detection-only models
# use the 3,000-token vocabulary, the multi-task ones 35,000 (T5 C4 32k SentencePiece).
OFFICIAL_CONFIGS = {
    "multitask-vit-b-640": lambda: _vit("multitask-vit-b-640", 640, 768, 12, 12, 3072, 6, 32000),
    "multitask-vit-b-1024": lambda: _vit("multitask-vit-b-1024", 1024, 768, 12, 12, 3072, 6, 32000),
    "det-vit-b-640": lambda: _vit("det-vit-b-640", 640, 768, 12, 12, 3072, 6, 0),
    "det-vit-b-1024": lambda: _vit("det-vit-b-1024", 1024, 768, 12, 12, 3072, 6, 0),
    "det-vit-l-640": lambda: _vit("det-vit-l-640", 640, 1024, 24, 16, 4096, 8, 0),
    "det-vit-l-1024": lambda: _vit("det-vit-l-1024", 1024, 1024, 24, 16, 4096, 8, 0),
    "official-tiny": _official_tiny,
}


def official_config(name: str) -> config_lib.ModelConfig:
    """The `ModelConfig` that holds the released checkpoint `name` (see OFFICIAL_CONFIGS)."""
    if name not in OFFICIAL_CONFIGS:
        raise ValueError(f"Unknown official config {name!r}; expected one of {tuple(OFFICIAL_CONFIGS)}")
    return OFFICIAL_CONFIGS[name]()


def _norm(prefix, layer):
    return {f"{prefix}/gamma": layer.gamma, f"{prefix}/beta": layer.beta}


def _dense(prefix, layer):
    return {f"{prefix}/kernel": layer.kernel, f"{prefix}/bias": layer.bias}


def _attention(prefix, attention):
    out = {}
    for theirs, ours in (("query", attention.query), ("key", attention.key), ("value", attention.value),
                         ("output", attention.output_dense)):
        out.update(_dense(f"{prefix}/_{theirs}_dense", ours))
    return out


def _mlp_block(prefix, block):
    return {**_norm(f"{prefix}/layernorms/0", block.norm), **_dense(f"{prefix}/mlp_layers/0/dense1", block.mlp.fc1),
            **_dense(f"{prefix}/mlp_layers/0/dense2", block.mlp.fc2)}


def variable_map(model) -> dict:
    """Official checkpoint key (without SUFFIX) -> our variable, for a built `Pix2SeqModel`."""
    if model.config.stem != "patch" or not model.config.stem_norm:
        raise UnsupportedCheckpointError(
            "official checkpoints need stem='patch' and stem_norm=True (use a config from OFFICIAL_CONFIGS)")
    enc, proj, dec = model.encoder, model.projection, model.decoder
    m = {**_dense("model/encoder/stem_conv", enc.patch_embedding), **_norm("model/encoder/stem_ln", enc.patch_norm),
         **_norm("model/encoder/output_ln", enc.final_norm)}
    for i, block in enumerate(enc.blocks):
        p = f"model/encoder/transformer_encoder/enc_layers/{i}"
        m.update({**_norm(f"{p}/mha_ln", block.norm), **_attention(f"{p}/mha", block.attention),
                  **_mlp_block(f"{p}/mlp", block.mlp_block)})
    m.update({**_dense("model/proj", proj.dense), **_norm("model/proj_ln", proj.norm),
              **_mlp_block("model/proj_mlp", proj.mlp_block)})
    m.update({"model/decoder/ar_decoder.Stoken_embedding": dec.token_embedding.embeddings,
              "model/decoder/ar_decoder.Sseq_pos_embedding": dec.position_embedding,
              "model/decoder/ar_decoder.Soutp_bias": dec.output_bias,
              **_norm("model/decoder/output_ln", dec.final_norm)})
    for i, block in enumerate(dec.blocks):
        p = f"model/decoder/decoder/dec_layers/{i}"
        m.update({**_norm(f"{p}/self_ln", block.self_norm), **_attention(f"{p}/self_mha", block.self_attention),
                  **_norm(f"{p}/cross_ln", block.cross_norm), **_attention(f"{p}/cross_mha", block.cross_attention),
                  **_mlp_block(f"{p}/mlp", block.mlp_block)})
    return m


def is_dropped(key: str) -> bool:
    """Training state that a model import leaves behind on purpose."""
    return key in DROPPED_KEYS or key.startswith("optimizer/") or "/.OPTIMIZER_SLOT/" in key


def checkpoint_prefix(path: str) -> str:
    """A checkpoint prefix, or the newest checkpoint of a directory."""
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no TF checkpoint in directory {path}")
        return latest
    return path


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What an import did: mapped keys (official -> our variable path) and the keys dropped."""

    mapped: dict
    dropped: tuple

    def summary(self) -> str:
        return f"{len(self.mapped)} variables imported, {len(self.dropped)} training-state entries dropped"


def load_official(model, path) -> ImportReport:
    """Copies the official checkpoint at `path` (prefix or directory) into the built `model`.

    Raises UnsupportedCheckpointError for a ResNet encoder and CheckpointMismatchError
    (naming every offending key) when a mapped key is missing, has another shape, or an
    official variable is neither mapped nor dropped. Nothing is assigned unless all match.
    """
    reader = tf.train.load_checkpoint(checkpoint_prefix(path))
    shapes = {k[: -len(SUFFIX)] if k.endswith(SUFFIX) else k: (k, s)
              for k, s in reader.get_variable_to_shape_map().items()}
    if any(k.startswith("model/encoder/resnet/") for k in shapes):
        raise UnsupportedCheckpointError(
            "this is a ResNet-encoder Pix2Seq checkpoint; only ViT-encoder checkpoints are supported")
    mapping = variable_map(model)
    problems = []
    for key, variable in mapping.items():
        if key not in shapes:
            problems.append(f"missing in the checkpoint: {key} (for {variable.path} {tuple(variable.shape)})")
        elif tuple(shapes[key][1]) != tuple(variable.shape):
            problems.append(f"shape mismatch: {key} is {tuple(shapes[key][1])}, "
                            f"{variable.path} is {tuple(variable.shape)}")
    dropped = tuple(sorted(k for k in shapes if is_dropped(k)))
    unused = sorted(set(shapes) - set(mapping) - set(dropped))
    problems += [f"not used by the model config: {k} {tuple(shapes[k][1])}" for k in unused]
    if problems:
        raise CheckpointMismatchError(
            f"official checkpoint {path} does not fit {model.config.name!r}:\n  " + "\n  ".join(problems))
    for key, variable in mapping.items():
        value = reader.get_tensor(shapes[key][0])
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return ImportReport(mapped={k: v.path for k, v in mapping.items()}, dropped=dropped)


def import_checkpoint(path, config_name_or_config):
    """A built `Pix2SeqModel` holding the official checkpoint, and the ImportReport."""
    from model.pix2seq_model import Pix2SeqModel

    config = config_name_or_config
    if isinstance(config, str):
        config = official_config(config)
    model = Pix2SeqModel(config)
    model.build()
    return model, load_official(model, path)
