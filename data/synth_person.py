"""Stick-figure persons whose limbs follow COCO's 17 keypoints.

A pose is sampled as joint positions; the figure is drawn from those joints
(thick limbs with round joints, filled torso, round head, eye dots when facing
the viewer), so every labeled keypoint lies on the drawn figure. Facing the
viewer, the person's left side is on the image's right, as in COCO.
"""
import numpy as np
from PIL import Image, ImageDraw

KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# COCO's skeleton, 1-based keypoint indices.
SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7),
    (6, 8), (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5),
    (4, 6), (5, 7),
)
K = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
_LIMBS = (
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
)
EAR_UNLABELED_PROB = 0.25


def sample_pose(rng, height, facing_viewer):
    """Joint positions (17 x 2, x/y) of a person `height` pixels tall, head top at y=0.

    Returns (joints, head_centre, head_radius, limb_width).
    """
    h = float(height)
    hr = 0.09 * h
    lean = rng.uniform(-0.04, 0.04) * h
    head = np.array([lean, hr])
    side = 1.0 if facing_viewer else -1.0  # x sign of the person's left side
    j = np.zeros((17, 2))
    j[K["nose"]] = head + (0.0, 0.2 * hr)
    j[K["left_eye"]] = head + (side * 0.38 * hr, -0.15 * hr)
    j[K["right_eye"]] = head + (-side * 0.38 * hr, -0.15 * hr)
    j[K["left_ear"]] = head + (side * 0.75 * hr, 0.05 * hr)
    j[K["right_ear"]] = head + (-side * 0.75 * hr, 0.05 * hr)
    for s, name in ((side, "left"), (-side, "right")):
        shoulder = np.array([s * 0.12 * h, 0.25 * h])
        hip = np.array([s * 0.07 * h + 0.3 * lean, 0.55 * h])
        # Arm angles measured from straight down, positive = away from the body.
        upper = np.deg2rad(rng.uniform(20, 165))
        lower = upper + np.deg2rad(rng.uniform(-30, 45))
        elbow = shoulder + 0.17 * h * np.array([s * np.sin(upper), np.cos(upper)])
        wrist = elbow + 0.16 * h * np.array([s * np.sin(lower), np.cos(lower)])
        thigh = np.deg2rad(rng.uniform(4, 28))
        shin = thigh + np.deg2rad(rng.uniform(-12, 12))
        knee = hip + 0.22 * h * np.array([s * np.sin(thigh), np.cos(thigh)])
        ankle = knee + 0.22 * h * np.array([s * np.sin(shin), np.cos(shin)])
        for part, point in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                            ("hip", hip), ("knee", knee), ("ankle", ankle)):
            j[K[f"{name}_{part}"]] = point
    limb_width = max(3.0, 0.06 * h)
    return j, head, hr, limb_width


def figure_extent(joints, head, head_radius, limb_width):
    """(xmin, ymin, xmax, ymax) that the drawn figure stays inside."""
    pad = limb_width / 2 + 1
    lo = np.minimum(joints.min(axis=0) - pad, head - head_radius - 1)
    hi = np.maximum(joints.max(axis=0) + pad, head + head_radius + 1)
    return lo[0], lo[1], hi[0], hi[1]


def _pil(p):
    """COCO continuous coordinates -> PIL pixel-centre coordinates."""
    return (float(p[0]) - 0.5, float(p[1]) - 0.5)


def _disc(draw, centre, radius):
    x, y = _pil(centre)
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)


def draw_person(joints, head, head_radius, limb_width, facing_viewer, size):
    """Masks of the figure: (body mask, eye mask or None), each bool [H, W]."""
    width, height = size
    body = Image.new("L", (width, height))
    draw = ImageDraw.Draw(body)
    w = int(round(limb_width))
    p = lambda name: joints[K[name]]  # noqa: E731
    draw.polygon([_pil(p(n)) for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip")],
                 fill=255)
    neck_base = 0.5 * (p("left_shoulder") + p("right_shoulder"))
    draw.line([_pil(head), _pil(neck_base)], fill=255, width=w)
    for a, b in _LIMBS:
        draw.line([_pil(p(a)), _pil(p(b))], fill=255, width=w)
    for name in KEYPOINT_NAMES[5:]:
        _disc(draw, p(name), limb_width / 2)
    _disc(draw, head, head_radius)
    body_mask = np.asarray(body) > 0
    if not facing_viewer:
        return body_mask, None
    eyes = Image.new("L", (width, height))
    eye_draw = ImageDraw.Draw(eyes)
    for name in ("left_eye", "right_eye"):
        _disc(eye_draw, p(name), max(1.0, 0.16 * head_radius))
    return body_mask, (np.asarray(eyes) > 0) & body_mask


def label_keypoints(joints, facing_viewer, rng, size):
    """COCO keypoints (17 x 3: x, y, v) before occlusion: labeled ones get v=2.

    Unlabeled (v=0, x=y=0): the face of a person seen from behind, keypoints
    outside the image, and ears the "annotator" skipped (EAR_UNLABELED_PROB).
    """
    width, height = size
    kps = np.zeros((17, 3))
    for i, name in enumerate(KEYPOINT_NAMES):
        x, y = joints[i]
        if not facing_viewer and name in ("nose", "left_eye", "right_eye"):
            continue
        if name.endswith("_ear") and rng.random() < EAR_UNLABELED_PROB:
            continue
        if not (0 <= x < width and 0 <= y < height):
            continue
        kps[i] = (round(float(x), 2), round(float(y), 2), 2)
    return kps


def arms_raised(joints):
    """How many wrists are above their shoulder (0, 1 or 2)."""
    return sum(int(joints[K[f"{s}_wrist"]][1] < joints[K[f"{s}_shoulder"]][1])
               for s in ("left", "right"))
