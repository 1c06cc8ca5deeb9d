"""Model sizes as frozen dataclasses, selectable by preset name.

`preset(name)` returns a `ModelConfig` for `tiny` (CPU tests and the demo),
`small`, `base` (the paper's ViT-B/16 at 640 with a 6 x 512 decoder and a 35000
token vocabulary) or `large` (ViT-L/16, 8 decoder layers). Token sizes live in
the embedded `TokenConfig`; `preset(name, caption_vocab_size=...)` overrides them
(the caption vocabulary size is only known once SentencePiece has been trained).
"""
import dataclasses

import pix2seq  # noqa: F401  (Keras 3 guard)
from data.preprocess import CanvasStyle
from model.layers import SINCOS_GRIDS
from model.tasks import seq_len, task_names
from model.vocab import TokenConfig


STEMS = ("patch", "conv")
COORDINATE_INITS = ("random", "sincos")
STEM_CHANNELS = (32, 64, 128, 256, 256, 256)


def conv_stem_channels(patch_size, dim):
    """Output channels of the conv stem's stride-2 stages, one per halving down to the patch grid
    (the encoder builds them, model/flops.py counts them)."""
    stages = patch_size.bit_length() - 1
    if stages < 1 or 2**stages != patch_size:
        raise ValueError(f"the conv stem needs a power-of-two patch_size >= 2. Received: {patch_size}")
    return [min(STEM_CHANNELS[i], dim) for i in range(stages)]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one Pix2Seq model.

    Attributes:
      name: preset name (informational).
      tokens: the token interface (vocabulary size, canvas size, sequence lengths).
      encoder_dim / encoder_depth / encoder_heads / encoder_mlp_dim: the ViT.
      decoder_dim / decoder_depth / decoder_heads / decoder_mlp_dim: the token decoder
        (the image projection uses the decoder widths).
      patch_size: ViT patch side in pixels.
      stem: how pixels become patch tokens: "patch" (ViT's one strided projection) or
        "conv" (stride-2 3x3 convolutions down to the patch grid, "early convolutions"),
        which a from-scratch model on little data and few steps learns much faster with.
      coordinate_init: initial coordinate-token embeddings: "random" or "sincos"
        (sine-cosine of the bin position, so neighbouring bins start out similar).
      stem_norm: LayerNorm right after the stem (the official ViT's `stem_ln`).
      sincos_grid: coordinates of the encoder's and the projection's sine-cosine
        positions: "index" (row/column index) or "2pi" (the grid scaled to [0, 2*pi],
        as the official code computes them).
      canvas_pad_value / resize_antialias: how images become canvases for this model
        (`data.preprocess.CanvasStyle`; the official checkpoints: 0.3 and antialiased).
      Defaults are this project's own architecture; `model/official_checkpoint.py`
      names the settings of the released official checkpoints.
      max_seq_len: learned decoder positions; 0 means the longest task sequence.
      dropout / drop_path: regularization rates used in training.
    """

    name: str
    tokens: TokenConfig
    encoder_dim: int
    encoder_depth: int
    encoder_heads: int
    encoder_mlp_dim: int
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int
    decoder_mlp_dim: int
    patch_size: int = 16
    stem: str = "patch"
    coordinate_init: str = "random"
    stem_norm: bool = False
    sincos_grid: str = "index"
    canvas_pad_value: float = 0.0
    resize_antialias: bool = False
    max_seq_len: int = 0
    dropout: float = 0.1
    drop_path: float = 0.1

    def __post_init__(self):
        if not isinstance(self.tokens, TokenConfig):
            raise ValueError(f"ModelConfig.tokens must be a TokenConfig. Received: {type(self.tokens).__name__}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ModelConfig: tokens.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        for dim, heads, which in (
            (self.encoder_dim, self.encoder_heads, "encoder"),
            (self.decoder_dim, self.decoder_heads, "decoder"),
        ):
            if dim % heads or dim % 4:
                raise ValueError(
                    f"ModelConfig.{which}_dim must be divisible by {which}_heads and by 4. Received: {dim}, {heads}"
                )
        if self.max_seq_len == 0:
            object.__setattr__(self, "max_seq_len", self.longest_sequence)
        if self.max_seq_len < self.longest_sequence:
            raise ValueError(
                f"ModelConfig.max_seq_len={self.max_seq_len} is shorter than the longest task sequence "
                f"({self.longest_sequence})"
            )
        for field, allowed in (("stem", STEMS), ("coordinate_init", COORDINATE_INITS), ("sincos_grid", SINCOS_GRIDS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"ModelConfig.{field} must be one of {allowed}. Received: {getattr(self, field)!r}")
        if self.stem == "conv":
            conv_stem_channels(self.patch_size, self.encoder_dim)
        for rate in ("dropout", "drop_path"):
            if not 0.0 <= getattr(self, rate) < 1.0:
                raise ValueError(f"ModelConfig.{rate} must be in [0, 1). Received: {getattr(self, rate)}")

    @property
    def image_size(self) -> int:
        return self.tokens.image_size

    @property
    def vocab_size(self) -> int:
        return self.tokens.vocab_size

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_image_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def longest_sequence(self) -> int:
        return _longest(self.tokens)

    def canvas_style(self) -> CanvasStyle:
        return CanvasStyle(pad_value=self.canvas_pad_value, antialias=self.resize_antialias)

    def replace(self, **changes) -> "ModelConfig":
        """A copy with fields changed; token fields (e.g. `caption_vocab_size`) go to `tokens`."""
        token_fields = {f.name for f in dataclasses.fields(TokenConfig)}
        token_changes = {k: changes.pop(k) for k in list(changes) if k in token_fields}
        tokens = dataclasses.replace(self.tokens, **token_changes) if token_changes else self.tokens
        if token_changes and "max_seq_len" not in changes and self.max_seq_len == _longest(self.tokens):
            changes["max_seq_len"] = 0  # keep tracking the longest sequence
        return dataclasses.replace(self, tokens=tokens, **changes)

    def to_dict(self) -> dict:
        """JSON-friendly dict (`from_dict` inverts it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        tokens = dict(d.pop("tokens"))
        tokens["keypoint_flip_pairs"] = tuple(tuple(p) for p in tokens.get("keypoint_flip_pairs", ()))
        return cls(tokens=TokenConfig(**tokens), **d)


def _longest(tokens: TokenConfig) -> int:
    return max(seq_len(task, tokens) for task in task_names())


def _tiny() -> ModelConfig:
    # CPU-sized, like its sequence budgets: 4 instances / 3 captions per image per step (the
    # paper's 10 / 5 would multiply a step's decoder tokens ~3x on images with few objects).
    tokens = TokenConfig(
        image_size=128, max_instances=10, max_polygon_points=32, caption_vocab_size=1000, max_caption_len=32,
        segmentation_instances_per_image=4, captions_per_image=3,
    )
    return ModelConfig(
        name="tiny",
        tokens=tokens,
        encoder_dim=128,
        encoder_depth=3,
        encoder_heads=4,
        encoder_mlp_dim=512,
        decoder_dim=128,
        decoder_depth=2,
        decoder_heads=4,
        decoder_mlp_dim=512,
    )


def _small() -> ModelConfig:
    tokens = TokenConfig(image_size=384, max_instances=50, max_polygon_points=64, caption_vocab_size=8000)
    return ModelConfig(
        name="small",
        tokens=tokens,
        encoder_dim=384,
        encoder_depth=12,
        encoder_heads=6,
        encoder_mlp_dim=1536,
        decoder_dim=384,
        decoder_depth=4,
        decoder_heads=6,
        decoder_mlp_dim=1536,
    )


def _base() -> ModelConfig:
    return ModelConfig(
        name="base",
        tokens=TokenConfig(image_size=640, caption_vocab_size=32000),
        encoder_dim=768,
        encoder_depth=12,
        encoder_heads=12,
        encoder_mlp_dim=3072,
        decoder_dim=512,
        decoder_depth=6,
        decoder_heads=16,
        decoder_mlp_dim=2048,
        max_seq_len=512,
    )


def _large() -> ModelConfig:
    return ModelConfig(
        name="large",
        tokens=TokenConfig(image_size=640, caption_vocab_size=32000),
        encoder_dim=1024,
        encoder_depth=24,
        encoder_heads=16,
        encoder_mlp_dim=4096,
        decoder_dim=512,
        decoder_depth=8,
        decoder_heads=16,
        decoder_mlp_dim=2048,
        max_seq_len=512,
    )


PRESETS = {"tiny": _tiny, "small": _small, "base": _base, "large": _large}


def preset(name: str, **changes) -> ModelConfig:
    """The named preset, optionally with fields (model or token) changed."""
    if name not in PRESETS:
        raise ValueError(f"Unknown model preset {name!r}; expected one of {tuple(PRESETS)}")
    config = PRESETS[name]()
    return config.replace(**changes) if changes else config
