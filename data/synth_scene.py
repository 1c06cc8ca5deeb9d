"""One synthetic scene: background, shapes, stick figures, occlusion, pixels.

Occlusion rule: objects are drawn back to front, each into its own pixel mask;
an object's annotation describes only the pixels that stay visible (its mask
minus the masks of everything drawn later). A placement is rejected (and
re-sampled, then dropped) if it would leave an earlier object with less than
60 % of its pixels visible, or with a visible region that has a hole (a COCO
polygon list cannot express holes). Crowds are annotated by RLE, which can.
"""
import dataclasses
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from data import synth_person as person
from data.synth_contours import has_holes
from data.synth_shapes import CLASS_COLOURS, COLOURS, PERSON_ID, SHAPE_IDS, shape_outline

ASPECTS = ((1, 1), (4, 3), (3, 4), (3, 2), (2, 3))
BACKGROUNDS = ("gradient", "striped", "checkered", "mottled")
CLASS_IDS = (PERSON_ID,) + SHAPE_IDS
NUM_OBJECTS_P = (0.05, 0.15, 0.2, 0.2, 0.16, 0.13, 0.11)  # P(0..6 objects)
MIN_VISIBLE_FRACTION = 0.6
PLACEMENT_TRIES = 12


@dataclasses.dataclass
class SceneObject:
    category_id: int
    colour: str
    size: str  # "small" / "medium" / "large" (drawn extent vs the short side)
    layers: List[Tuple[np.ndarray, Tuple[int, int, int]]]  # (bool mask, rgb), drawn in order
    iscrowd: int = 0
    keypoints: Optional[np.ndarray] = None  # persons: 17 x 3 (x, y, v)
    arms_raised: int = 0
    full: Optional[np.ndarray] = None  # all pixels this object paints
    visible: Optional[np.ndarray] = None  # pixels still showing in the final image

    def __post_init__(self):
        self.full = np.logical_or.reduce([m for m, _ in self.layers])


@dataclasses.dataclass
class Scene:
    image: np.ndarray  # uint8 [H, W, 3]
    background: str
    objects: List[SceneObject]  # back to front

    @property
    def height(self):
        return self.image.shape[0]

    @property
    def width(self):
        return self.image.shape[1]


def image_shape(rng, image_size):
    """(height, width): longest side `image_size`, aspect ratio from ASPECTS."""
    w, h = ASPECTS[rng.integers(len(ASPECTS))]
    short = int(round(image_size * min(w, h) / max(w, h)))
    return (image_size, short) if h >= w else (short, image_size)


def _muted_colour(rng):
    hsv = np.array([[[rng.uniform(0, 255), rng.uniform(20, 80), rng.uniform(115, 195)]]], np.uint8)
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"), np.float64)[0, 0]


def render_background(rng, height, width):
    """Gradient between two muted colours plus a low-contrast texture."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    c1, c2 = _muted_colour(rng), _muted_colour(rng)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    theta = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(theta) + yy * np.sin(theta)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c1 + t[..., None] * (c2 - c1)
    amp = rng.uniform(10, 18)
    if kind == "striped":
        period = rng.uniform(0.05, 0.12) * max(height, width)
        phi = rng.uniform(0, np.pi)
        u = (xx * np.cos(phi) + yy * np.sin(phi)) * max(height, width)
        img += amp * np.sign(np.sin(2 * np.pi * u / period))[..., None]
    elif kind == "checkered":
        cell = rng.uniform(0.06, 0.12) * max(height, width)
        yi, xi = np.mgrid[0:height, 0:width]
        img += amp * (((yi // cell + xi // cell) % 2) * 2 - 1)[..., None]
    elif kind == "mottled":
        grid = rng.uniform(-1, 1, (6, 6)).astype(np.float32)
        noise = np.asarray(Image.fromarray(grid, "F").resize((width, height), Image.BICUBIC))
        img += 1.5 * amp * noise[..., None]
    return kind, img


def _size_label(extent, short):
    if extent < 0.22 * short:
        return "small"
    return "large" if extent > 0.32 * short else "medium"


def _polygon_mask(points, height, width):
    canvas = Image.new("L", (width, height))
    ImageDraw.Draw(canvas).polygon([(float(x) - 0.5, float(y) - 0.5) for x, y in points], fill=255)
    return np.asarray(canvas) > 0


def _eroded(mask):
    """4-neighbour erosion (pixels whose four neighbours are all in the mask)."""
    m = np.pad(mask, 1)
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def sample_shape(rng, category_id, height, width):
    """One shape, fully inside the image, extent 16-40 % of the short side."""
    short = min(height, width)
    radius = 0.5 * rng.uniform(0.16, 0.40) * short
    cx = rng.uniform(radius + 1, width - radius - 1)
    cy = rng.uniform(radius + 1, height - radius - 1)
    colour = CLASS_COLOURS[category_id][rng.integers(2)]
    mask = _polygon_mask(shape_outline(category_id, cx, cy, radius, rng.uniform(-np.pi, np.pi)),
                         height, width)
    rgb = COLOURS[colour]
    # A one-pixel darker rim (part of the object) keeps touching same-colour instances apart.
    rim = mask & ~_eroded(mask)
    return SceneObject(category_id, colour, _size_label(2 * radius, short),
                       [(mask, rgb), (rim, tuple(int(0.6 * c) for c in rgb))])


def sample_person(rng, height, width):
    """One stick figure, 45-85 % of the image height, with its COCO keypoints."""
    tall = rng.uniform(0.45, 0.85) * height
    facing = bool(rng.random() < 0.75)
    joints, head, hr, lw = person.sample_pose(rng, tall, facing)
    x0, y0, x1, y1 = person.figure_extent(joints, head, hr, lw)
    # Usually the whole figure is inside; sometimes its feet leave the bottom edge.
    overflow = 0.25 * tall if rng.random() < 0.15 else 0.0
    dx = rng.uniform(-x0, max(-x0, width - x1))
    dy = rng.uniform(-y0, max(-y0, height - y1 + overflow))
    shift = np.array([dx, dy])
    joints, head = joints + shift, head + shift
    colour = CLASS_COLOURS[PERSON_ID][rng.integers(2)]
    body, eyes = person.draw_person(joints, head, hr, lw, facing, (width, height))
    layers = [(body, COLOURS[colour])]
    if eyes is not None:
        layers.append((eyes, COLOURS["white"]))
    kps = person.label_keypoints(joints, facing, rng, (width, height))
    size = "small" if tall < 0.55 * height else "large" if tall > 0.72 * height else "medium"
    return SceneObject(PERSON_ID, colour, size, layers, keypoints=kps,
                       arms_raised=person.arms_raised(joints))


def sample_crowd(rng, height, width):
    """A cluster of 6-12 small same-class shapes, annotated as one iscrowd=1 object."""
    short = min(height, width)
    category_id = SHAPE_IDS[rng.integers(len(SHAPE_IDS))]
    colour = CLASS_COLOURS[category_id][rng.integers(2)]
    spread = 0.16 * short
    cx = rng.uniform(spread + 0.05 * short, width - spread - 0.05 * short)
    cy = rng.uniform(spread + 0.05 * short, height - spread - 0.05 * short)
    mask = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(6, 13))):
        r = rng.uniform(0.025, 0.04) * short
        px, py = cx + rng.uniform(-spread, spread), cy + rng.uniform(-spread, spread)
        mask |= _polygon_mask(shape_outline(category_id, px, py, r, rng.uniform(-np.pi, np.pi)),
                              height, width)
    return SceneObject(category_id, colour, "small", [(mask, COLOURS[colour])], iscrowd=1)


def _placement_ok(objects, new):
    """Would drawing `new` on top keep every earlier object annotatable?"""
    if not new.full.any():
        return False
    for obj in objects:
        if not (obj.visible & new.full).any():
            continue
        remaining = obj.visible & ~new.full
        if remaining.sum() < MIN_VISIBLE_FRACTION * obj.full.sum():
            return False
        if not obj.iscrowd and has_holes(remaining):
            return False
    return True


def _add(objects, new):
    for obj in objects:
        obj.visible = obj.visible & ~new.full
    new.visible = new.full.copy()
    objects.append(new)


def _update_keypoint_visibility(obj):
    """Labeled keypoints covered by later objects become v=1 (labeled, not visible)."""
    for kp in obj.keypoints:
        if kp[2] > 0:
            kp[2] = 2 if obj.visible[int(kp[1]), int(kp[0])] else 1


def sample_scene(rng, image_size, with_crowd=False):
    """Samples and draws one scene (deterministic for the generator's state)."""
    height, width = image_shape(rng, image_size)
    background, canvas = render_background(rng, height, width)
    objects = []
    wanted = []
    if with_crowd:
        wanted.append(None)  # crowd goes to the back
    wanted += [CLASS_IDS[i] for i in rng.integers(len(CLASS_IDS), size=rng.choice(7, p=NUM_OBJECTS_P))]
    for category_id in wanted:
        for _ in range(PLACEMENT_TRIES):
            if category_id is None:
                new = sample_crowd(rng, height, width)
            elif category_id == PERSON_ID:
                new = sample_person(rng, height, width)
            else:
                new = sample_shape(rng, category_id, height, width)
            if (new.iscrowd or not has_holes(new.full)) and _placement_ok(objects, new):
                _add(objects, new)
                break
    for obj in objects:
        for mask, rgb in obj.layers:
            canvas[mask] = rgb
        if obj.keypoints is not None:
            _update_keypoint_visibility(obj)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return Scene(image=image, background=background, objects=objects)
