"""The shared token vocabulary (DESIGN.md §4) and the sizes that shape it.

Every task speaks in the same id space so one decoder serves all four; the
layout is the official Pix2Seq v2 one, which keeps released checkpoints
importable. Ranges:

    0            padding, and end-of-sequence for detection/segmentation/keypoints
    10..13       task prompts (detection, segmentation, keypoints, captioning)
    30           fake (noise) class; also a dropped caption input token
    40           polygon part separator
    41           invisible / unlabeled keypoint
    100 + c      class token of category id c (c in [1, max_class_id] <= 899)
    1000 + q     coordinate bin q in [0, num_bins) for a value v in [0, 1] of the
                 padded square canvas: q = round(v * (num_bins - 1)), clipped
    3000 + p     SentencePiece piece p (EOS piece 1 -> 3001)

Functions here are TensorFlow ops usable eagerly, under `tf.function` and in
`tf.data.map`; they accept tensors or array-likes.
"""
import dataclasses

import tensorflow as tf

PAD = 0
EOS = 0
DETECTION_PROMPT = 10
SEGMENTATION_PROMPT = 11
KEYPOINT_PROMPT = 12
CAPTION_PROMPT = 13
FAKE_CLASS = 30
FAKE_TEXT = 30  # the same token stands for a dropped caption input token
SEPARATOR = 40
INVISIBLE = 41
CLASS_OFFSET = 100
COORD_OFFSET = 1000
TEXT_OFFSET = 3000
MAX_CLASS_TOKEN_ID = 899  # category ids live in [1, 899] -> tokens 101..999
MAX_NUM_BINS = TEXT_OFFSET - COORD_OFFSET
CAPTION_PAD_PIECE = 0  # SentencePiece ids: pad 0, eos 1, unk 2 (T5 layout)
CAPTION_EOS_PIECE = 1
CAPTION_UNK_PIECE = 2
CAPTION_EOS = TEXT_OFFSET + CAPTION_EOS_PIECE

# COCO person keypoints: left/right pairs swapped by a horizontal flip.
COCO_KEYPOINT_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


OBJECT_ORDERS = ("random", "area", "dist2ori")


@dataclasses.dataclass(frozen=True)
class TokenConfig:
    """Sizes of the token interface; one instance is shared by all tasks.

    Attributes:
      num_bins: coordinate quantization bins (<= 2000).
      max_instances: detection objects per sequence (100 in the paper).
      max_polygon_points: polygon budget per instance, counted in (y, x) pairs
        including the `40 40` separator pairs between parts.
      num_keypoints: keypoints per person (17 for COCO).
      keypoint_flip_pairs: index pairs swapped by a horizontal flip.
      caption_vocab_size: SentencePiece pieces (32k in the paper); 0 means no caption
        range, the vocabulary ends at TEXT_OFFSET (the official detection-only
        checkpoints' 3,000 tokens) and the model cannot caption.
      max_caption_len: captioning sequence length (pieces + EOS, prompt excluded).
      image_size: side of the padded square canvas in pixels.
      max_class_id: largest category id (COCO: 90); class tokens 101..100+max_class_id.
      person_class_id: class index whose instances carry keypoints (prompt class token).
      class_category_ids: the dataset's class map (data/dataset_info.py): () when class
        index = category id (the official COCO layout), else the category id of each
        class index (index c -> class_category_ids[c - 1]). The serving signatures
        speak category ids through it.
      declared_classes: the class indices the dataset declares a category for, when
        they do not fill the class map (the identity map of a dataset declaring only
        some ids in [1, max_class_id]); () = every index the map covers. Inference only
        reports `reportable_classes()` (model/tasks/detection.py).
      object_order: order of the objects in a detection training sequence: "random"
        (the paper's default), "area" (largest first) or "dist2ori" (nearest box
        top-left corner to the image origin first), the paper's ablation choices.

    Training recipe (Pix2Seq v2's values by default; each acts in the task's
    `build_sequences` with `augment=True` only, model/tasks):
      noise_jitter: detection duplicate noise boxes move each side by a truncated
        normal of std `noise_jitter / 2` times the box size (so at most `noise_jitter`).
      noise_random_box_size: random noise boxes get height and width
        |truncated normal| of std `noise_random_box_size / 2`.
      keypoint_mask_max_rate: each keypoint sequence replaces its response *input*
        tokens by the invisible token 41 at a rate drawn from U(0, this); 0 disables.
      caption_drop_rate: rate at which caption response input tokens become the fake
        token 30; 0 disables.
      captions_per_image: captions of one image trained per step (one sequence each,
        one image encoding); images with fewer captions pad with weight-0 rows.
      segmentation_instances_per_image: instances of one image trained per step.
      segmentation_padding_weight: weight of the PAD targets after a polygon's EOS.
    """

    num_bins: int = 1000
    max_instances: int = 100
    max_polygon_points: int = 128
    num_keypoints: int = 17
    keypoint_flip_pairs: tuple = COCO_KEYPOINT_FLIP_PAIRS
    caption_vocab_size: int = 32000
    max_caption_len: int = 128
    image_size: int = 640
    max_class_id: int = 90
    person_class_id: int = 1
    object_order: str = "random"
    class_category_ids: tuple = ()
    declared_classes: tuple = ()
    noise_jitter: float = 0.1
    noise_random_box_size: float = 1.0
    keypoint_mask_max_rate: float = 1.0
    caption_drop_rate: float = 0.5
    captions_per_image: int = 5
    segmentation_instances_per_image: int = 10
    segmentation_padding_weight: float = 1.0

    def __post_init__(self):
        # JSON round trips turn tuples into lists; keep the config hashable and comparable.
        object.__setattr__(self, "keypoint_flip_pairs", tuple(tuple(p) for p in self.keypoint_flip_pairs))
        object.__setattr__(self, "class_category_ids", tuple(int(c) for c in self.class_category_ids))
        object.__setattr__(self, "declared_classes", tuple(sorted({int(c) for c in self.declared_classes})))
        checks = (
            (2 <= self.num_bins <= MAX_NUM_BINS, "num_bins", f"in [2, {MAX_NUM_BINS}]"),
            (self.max_instances >= 1, "max_instances", ">= 1"),
            (self.max_polygon_points >= 3, "max_polygon_points", ">= 3"),
            (self.num_keypoints >= 1, "num_keypoints", ">= 1"),
            (self.caption_vocab_size == 0 or self.caption_vocab_size > CAPTION_UNK_PIECE + 1,
             "caption_vocab_size", "0 (no captions) or > 3"),
            (self.max_caption_len >= 2, "max_caption_len", ">= 2"),
            (self.image_size >= 1, "image_size", ">= 1"),
            (1 <= self.max_class_id <= MAX_CLASS_TOKEN_ID, "max_class_id", f"in [1, {MAX_CLASS_TOKEN_ID}]"),
            (1 <= self.person_class_id <= self.max_class_id, "person_class_id", "in [1, max_class_id]"),
            (self.object_order in OBJECT_ORDERS, "object_order", f"one of {OBJECT_ORDERS}"),
            (len(self.class_category_ids) <= self.max_class_id, "class_category_ids",
             "at most max_class_id ids"),
            (all(1 <= c <= self.class_map_size for c in self.declared_classes), "declared_classes",
             "class indices in [1, len(class_category_ids) or max_class_id]"),
            (0.0 <= self.noise_jitter <= 1.0, "noise_jitter", "in [0, 1]"),
            (0.0 < self.noise_random_box_size <= 1.0, "noise_random_box_size", "in (0, 1]"),
            (0.0 <= self.keypoint_mask_max_rate <= 1.0, "keypoint_mask_max_rate", "in [0, 1]"),
            (0.0 <= self.caption_drop_rate < 1.0, "caption_drop_rate", "in [0, 1)"),
            (self.captions_per_image >= 1, "captions_per_image", ">= 1"),
            (self.segmentation_instances_per_image >= 1, "segmentation_instances_per_image", ">= 1"),
            (self.segmentation_padding_weight >= 0.0, "segmentation_padding_weight", ">= 0"),
        )
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"TokenConfig.{name} must be {rule}. Received: {getattr(self, name)!r}")
        for pair in self.keypoint_flip_pairs:
            if len(pair) != 2 or not all(0 <= i < self.num_keypoints for i in pair):
                raise ValueError(
                    "TokenConfig.keypoint_flip_pairs must hold index pairs in "
                    f"[0, num_keypoints). Received: {self.keypoint_flip_pairs!r}")

    @property
    def class_map_size(self) -> int:
        """Class indices the class map covers: 1..len(class_category_ids), or
        1..max_class_id for the identity map."""
        return len(self.class_category_ids) or self.max_class_id

    def reportable_classes(self) -> tuple:
        """The class indices inference may report: the dataset's declared classes, every
        index of the class map when none are listed. The paper restricts a class position
        to the class-token range; this restricts it to the classes the data declares."""
        return self.declared_classes or tuple(range(1, self.class_map_size + 1))

    @property
    def vocab_size(self) -> int:
        return TEXT_OFFSET + self.caption_vocab_size

    @property
    def has_captions(self) -> bool:
        return self.caption_vocab_size > 0

    @property
    def detection_seq_len(self) -> int:
        """Input/target length: 5 tokens per object, then EOS."""
        return 5 * self.max_instances + 1

    @property
    def segmentation_seq_len(self) -> int:
        """Input/target length: 5 prompt targets, polygon pairs, then EOS."""
        return 5 + 2 * self.max_polygon_points + 1

    @property
    def keypoint_seq_len(self) -> int:
        """Input/target length: 5 prompt targets, 2 per keypoint, then EOS."""
        return 5 + 2 * self.num_keypoints + 1

    @property
    def caption_seq_len(self) -> int:
        return self.max_caption_len


# --- coordinates ---------------------------------------------------------------------------

def quantize(values, num_bins: int = 1000):
    """Canvas-normalized coordinates in [0, 1] -> coordinate tokens (int32).

    `round(v * (num_bins - 1))` clipped to the bin range, shifted by COORD_OFFSET, so a
    round trip through `dequantize` is exact to half a bin.
    """
    values = tf.convert_to_tensor(values, tf.float32)
    bins = tf.cast(tf.round(values * float(num_bins - 1)), tf.int32)
    return tf.clip_by_value(bins, 0, num_bins - 1) + COORD_OFFSET


def dequantize(tokens, num_bins: int = 1000):
    """Coordinate tokens -> canvas-normalized float32 values in [0, 1] (clipped)."""
    tokens = tf.convert_to_tensor(tokens, tf.int32)
    bins = tf.clip_by_value(tokens - COORD_OFFSET, 0, num_bins - 1)
    return tf.cast(bins, tf.float32) / float(num_bins - 1)


def is_coordinate(tokens, num_bins: int = 1000):
    tokens = tf.convert_to_tensor(tokens, tf.int32)
    return (tokens >= COORD_OFFSET) & (tokens < COORD_OFFSET + num_bins)


# --- classes -------------------------------------------------------------------------------

def class_to_token(classes):
    """Category ids (>= 1) -> class tokens."""
    return tf.convert_to_tensor(classes, tf.int32) + CLASS_OFFSET


def token_to_class(tokens):
    """Class tokens -> category ids; anything outside the class range (incl. FAKE_CLASS) -> 0."""
    tokens = tf.convert_to_tensor(tokens, tf.int32)
    ok = (tokens > CLASS_OFFSET) & (tokens <= CLASS_OFFSET + MAX_CLASS_TOKEN_ID)
    return tf.where(ok, tokens - CLASS_OFFSET, tf.zeros_like(tokens))


def is_class(tokens, max_class_id: int = MAX_CLASS_TOKEN_ID):
    tokens = tf.convert_to_tensor(tokens, tf.int32)
    return (tokens > CLASS_OFFSET) & (tokens <= CLASS_OFFSET + max_class_id)


# --- text ----------------------------------------------------------------------------------

def text_to_token(piece_ids):
    """SentencePiece piece ids -> text tokens."""
    return tf.convert_to_tensor(piece_ids, tf.int32) + TEXT_OFFSET


def token_to_text(tokens):
    """Text tokens -> SentencePiece piece ids; non-text tokens -> -1."""
    tokens = tf.convert_to_tensor(tokens, tf.int32)
    return tf.where(tokens >= TEXT_OFFSET, tokens - TEXT_OFFSET, -tf.ones_like(tokens))


def range_mask(vocab_size: int, start: int, stop: int):
    """Boolean [vocab_size] that is True on ids in [start, stop)."""
    ids = tf.range(vocab_size, dtype=tf.int32)
    return (ids >= start) & (ids < stop)


def token_mask(vocab_size: int, token_ids):
    """Boolean [vocab_size] that is True on the given ids."""
    ids = tf.range(vocab_size, dtype=tf.int32)
    wanted = tf.reshape(tf.convert_to_tensor(token_ids, tf.int32), [-1, 1])
    return tf.reduce_any(ids[tf.newaxis, :] == wanted, axis=0)


def as_seed(seed):
    """An int or a [2] integer tensor -> an int64 [2] stateless-random seed."""
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"seed must be an integer or a [2] integer tensor. Received dtype: {seed.dtype}")
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.zeros_like(seed)])
    return tf.reshape(seed, [2])
