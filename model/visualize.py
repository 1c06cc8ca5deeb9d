"""Pictures of predictions in the style of the paper's figures.

Boxes with "name score" labels, a translucent coloured overlay per instance mask,
keypoint skeletons (COCO's 17 joints), and the caption on a strip under the image.
Input is a per-image result of model/results.py; output a PIL image.
"""
import colorsys
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data.synth_person import SKELETON
from model import results as results_lib

MASK_ALPHA = 0.45


def colour(i):
    """A distinct saturated RGB colour for instance `i` (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def above(result, min_score):
    """`result` with only the objects scoring >= min_score, highest first."""
    objects = sorted((o for o in result.get("objects") or [] if o["score"] >= min_score), key=lambda o: -o["score"])
    return {**result, "objects": objects}


def _overlay_masks(pixels, objects):
    out = pixels.astype(np.float32)
    for i, obj in enumerate(objects):
        if "segmentation" not in obj:
            continue
        m = results_lib.decode_mask(obj)
        if m.shape == out.shape[:2] and m.any():
            out[m] = (1 - MASK_ALPHA) * out[m] + MASK_ALPHA * np.array(colour(i), np.float32)
    return out.astype(np.uint8)


def _draw_keypoints(draw, keypoints, rgb, min_score, radius):
    visible = keypoints[:, 2] >= min_score
    for a, b in SKELETON:
        if a - 1 < len(keypoints) and b - 1 < len(keypoints) and visible[a - 1] and visible[b - 1]:
            draw.line([tuple(keypoints[a - 1, :2]), tuple(keypoints[b - 1, :2])], fill=rgb, width=max(1, radius // 2))
    for x, y, s in keypoints[visible]:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=rgb, outline=(255, 255, 255))


def _caption_strip(image, caption, font):
    width = image.width
    chars = max(8, width // 7)
    lines = textwrap.wrap(caption, chars) or [""]
    line_h = 14
    canvas = Image.new("RGB", (width, image.height + line_h * len(lines) + 8), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, image.height + 4 + i * line_h), line, fill=(0, 0, 0), font=font)
    return canvas


def draw_result(image, result, category_names=None, keypoint_min_score=0.0):
    """Draw one result dict on `image` (PIL, any mode); returns a new RGB image."""
    names = category_names or {}
    font = ImageFont.load_default()
    objects = result.get("objects", [])
    pixels = np.asarray(image.convert("RGB"))
    picture = Image.fromarray(_overlay_masks(pixels, objects))
    draw = ImageDraw.Draw(picture)
    line = max(1, round(max(picture.size) / 250))
    for i, obj in enumerate(objects):
        rgb = colour(i)
        y0, x0, y1, x1 = obj["box"]
        ymin, xmin, ymax, xmax = min(y0, y1), min(x0, x1), max(y0, y1), max(x0, x1)
        draw.rectangle([xmin, ymin, xmax, ymax], outline=rgb, width=line)
        label = f"{names.get(obj['category_id'], 'class ' + str(obj['category_id']))} {obj['score']:.2f}"
        left, top, right, bottom = draw.textbbox((xmin, ymin), label, font=font)
        y = ymin - (bottom - top) - 2 if ymin - (bottom - top) - 2 >= 0 else ymin
        draw.rectangle([xmin, y, xmin + (right - left) + 4, y + (bottom - top) + 2], fill=rgb)
        draw.text((xmin + 2, y), label, fill=(0, 0, 0), font=font)
        if "keypoints" in obj:
            _draw_keypoints(draw, np.asarray(obj["keypoints"]), rgb, keypoint_min_score, line + 1)
    if "caption" in result:
        picture = _caption_strip(picture, result["caption"], font)
    return picture
