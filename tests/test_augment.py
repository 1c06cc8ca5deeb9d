"""Augmentation and canvas preparation: geometry stays on the drawn objects."""
import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

import example_records as er
from data import augment, geometry, parse, preprocess

S = 128
PAIRS = tuple(zip(er.LEFT, er.RIGHT))
NAMES = {2: "red", 3: "green", 1: "person"}
SEEDS = range(4)
# The data ops each task's `augment` uses (model/tasks: `Task.augment` picks one of these).
AUGMENT = {"detection": augment.augment_detection, "segmentation": augment.augment_segmentation,
           "keypoints": augment.augment_keypoints, "captioning": augment.augment_captioning}


@pytest.fixture(scope="module")
def examples():
    return [parse.parse_example(tf.constant(er.serialized(*er.make_record(i, seed=i))), er.NUM_KEYPOINTS)
            for i in (1, 2)]


def _rasterize(points):
    rle = mask_utils.frPyObjects([(points[:, ::-1] * S).reshape(-1).tolist()], S, S)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _box_of(mask):
    ys, xs = np.nonzero(mask)
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]) / S


def _box_iou(a, b):
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    area = lambda x: np.prod(x[2:] - x[:2])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def assert_on_objects(out, min_pixels=100):
    """Every kept object's polygon (re-rasterized) and box cover its drawn pixels."""
    image = out["image"].numpy()
    assert image.shape == (S, S, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    masks = er.object_masks(image)
    inst = out["polygon_instance"].numpy()
    checked = 0
    crowd = out["is_crowd"].numpy()
    for i, cls in enumerate(out["classes"].numpy()):
        drawn = masks[NAMES[int(cls)]]
        if crowd[i] or drawn.sum() < min_pixels:  # crowd objects carry no polygon
            continue
        assert _iou(_rasterize(out["polygon_points"].numpy()[inst == i]), drawn) >= 0.9
        drawn_box = _box_of(drawn)
        if min(drawn_box[2:] - drawn_box[:2]) * S >= 16:  # a pixel off is < 10% of the box
            assert _box_iou(out["boxes"].numpy()[i], drawn_box) >= 0.9
        checked += 1
    return checked


def assert_keypoints_on_dots(out):
    """Labelled keypoints land on their dots; the left one stays right of the right one."""
    image = out["image"].numpy()
    for kps in out["keypoints"].numpy():
        for left, right in PAIRS:
            (ly, lx, lv), (ry, rx, rv) = kps[left], kps[right]
            if lv == 0 or rv == 0:
                continue
            assert lx > rx  # person faces the camera: left keypoints on the image's right
            for y, x in ((ly, lx), (ry, rx)):
                pixel = image[min(int(y * S), S - 1), min(int(x * S), S - 1)]
                assert pixel[2] > 0.5 and (pixel[0] > 0.5) != (pixel[1] > 0.5)  # magenta or cyan


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "segmentation", "keypoints", "captioning"])
def test_augmentation_keeps_geometry_on_drawn_objects(examples, task):
    checked = 0
    for example in examples:
        for s in SEEDS:
            out = AUGMENT[task](example, tf.constant([s, 7], tf.int64), S, keypoint_flip_pairs=PAIRS)
            checked += assert_on_objects(out)
            assert_keypoints_on_dots(out)
            assert not np.any(out["is_crowd"].numpy())
            if task in ("segmentation", "keypoints"):
                assert out["boxes"].shape[0] == 1
            if task == "keypoints":
                assert out["classes"].numpy()[0] == 1
            if task == "captioning":
                assert out["captions"].shape[0] == 1
    assert checked >= len(examples) * len(SEEDS) // 2


def test_flip_swaps_left_and_right_keypoints(examples):
    canvas = preprocess.resize_and_pad(examples[0], S)
    colour_at = lambda out, k: out["image"].numpy()[  # noqa: E731
        int(out["keypoints"].numpy()[2, k, 0] * S), int(out["keypoints"].numpy()[2, k, 1] * S)]
    plain = augment.flip_left_right(canvas, False, PAIRS)
    flipped = augment.flip_left_right(canvas, True, PAIRS)
    for left, right in PAIRS:
        assert colour_at(plain, left)[0] > 0.5  # magenta: the dot drawn as the left one
        assert colour_at(flipped, left)[1] > 0.5  # cyan: in the mirror the old right is the left
        assert flipped["keypoints"].numpy()[2, left, 1] == pytest.approx(
            1.0 - canvas["keypoints"].numpy()[2, right, 1])
    assert_on_objects(flipped)


@pytest.mark.slow
def test_same_seed_same_result_eager_and_in_tf_data(examples):
    seed = tf.constant([3, 4], tf.int64)
    eager = augment.augment_detection(examples[0], seed, S, keypoint_flip_pairs=PAIRS)
    ds = tf.data.Dataset.from_tensors(examples[0]).map(
        lambda e: augment.augment_detection(e, seed, S, keypoint_flip_pairs=PAIRS))
    graph = next(iter(ds))
    for key in ("image", "boxes", "polygon_points", "keypoints"):
        np.testing.assert_allclose(graph[key].numpy(), eager[key].numpy(), atol=1e-5)
    other = augment.augment_detection(examples[0], tf.constant([5, 4], tf.int64), S)
    assert not np.allclose(other["image"].numpy(), eager["image"].numpy())


def test_resize_and_pad_maps_back_to_original_pixels(examples):
    example = examples[0]
    out = preprocess.resize_and_pad(example, S)
    h, w = example["orig_size"].numpy()
    scale = out["canvas_scale"].numpy()
    np.testing.assert_allclose(scale, [round(h * S / w) / h, 1.0 * S / w])
    image = out["image"].numpy()
    assert np.all(image[int(np.ceil(h * scale[0])):] == 0)  # padding at the bottom
    assert assert_on_objects(out) == 3
    back = out["boxes"].numpy() * S / np.tile(scale, 2) + np.tile(out["canvas_offset"].numpy(), 2)
    np.testing.assert_allclose(back, example["boxes"].numpy() * [h, w, h, w], atol=1e-3)


def test_keypoint_eval_crop_is_twice_the_person_box(examples):
    example = examples[0]
    person = int(preprocess.keypoint_candidates(example).numpy()[0])
    out = preprocess.prepare_keypoint_instance(example, person, S)
    box = out["boxes"].numpy()[0]
    hw = example["orig_size"].numpy()
    source = example["boxes"].numpy()[person] * np.tile(hw, 2)
    centre, half = (source[:2] + source[2:]) / 2, (source[2:] - source[:2])
    window = np.concatenate([np.floor(np.maximum(centre - half, 0)), np.ceil(np.minimum(centre + half, hw))])
    expected = (source - np.tile(window[:2], 2)) * S / max(window[2:] - window[:2])
    np.testing.assert_allclose(box * S, expected, atol=0.5)
    assert_keypoints_on_dots(out)
    # Canvas coordinates map back onto the person's original box.
    back = box * S / np.tile(out["canvas_scale"].numpy(), 2) + np.tile(out["canvas_offset"].numpy(), 2)
    np.testing.assert_allclose(back, source, atol=0.6)


def test_canvas_boxes_match_moved_polygon_corners():
    """geometry.clip_boxes after the box move and geometry.move_points: the same affine
    map (a box-only object with keypoints on its corners)."""
    image = tf.zeros([50, 80, 3], tf.uint8)
    box = tf.constant([[0.3, 0.2, 0.9, 0.6]])
    corners = tf.constant([[[0.3, 0.2, 2.0], [0.9, 0.6, 2.0]]])
    example = {"image": image, "boxes": box, "classes": tf.constant([1]), "is_crowd": tf.constant([0]),
               "areas": tf.constant([1.0]), "polygon_points": tf.zeros([0, 2]),
               "polygon_instance": tf.zeros([0], tf.int32), "polygon_part": tf.zeros([0], tf.int32),
               "keypoints": corners}
    transform = preprocess.canvas_transform(50, 80, 64, scale=1.3, offset_fraction=(0.5, 0.25))
    out = preprocess.apply_canvas_transform(example, transform, 64)
    kps = out["keypoints"].numpy()[0]
    assert np.all(kps[:, 2] == 2.0)
    np.testing.assert_allclose(out["boxes"].numpy()[0], kps[:, :2].reshape(-1), atol=1e-5)
    flipped = augment.flip_left_right(out, True)
    kps = flipped["keypoints"].numpy()[0]
    np.testing.assert_allclose(flipped["boxes"].numpy()[0], [kps[0, 0], kps[1, 1], kps[1, 0], kps[0, 1]],
                               atol=1e-5)


def _box_example(height, width, boxes):
    n = len(boxes)
    return {"image": tf.zeros([height, width, 3], tf.uint8), "boxes": tf.constant(boxes, tf.float32),
            "classes": tf.range(1, n + 1), "is_crowd": tf.zeros([n], tf.int32), "areas": tf.ones([n])}


def test_flip_mirrors_pixels_and_boxes_and_clips_boxes_to_the_image():
    image = np.zeros([4, 6, 3], np.uint8)
    image[1, 0, 0] = 255
    boxes = [[0.1, 0.2, 0.5, 0.7], [-0.1, 0.9, 0.3, 1.2], [0.2, 0.4, 0.6, 0.4]]
    example = dict(_box_example(4, 6, boxes), image=tf.constant(image))
    flipped = augment.flip_left_right(example, True)
    assert flipped["image"].numpy()[1, 5, 0] == 255 and flipped["image"].numpy().sum() == 255
    # x -> 1 - x (xmin and xmax trade places), then clipped to [0, 1]; the zero-width box is lost (-1).
    np.testing.assert_allclose(flipped["boxes"].numpy(),
                               [[0.1, 0.3, 0.5, 0.8], [0.0, 0.0, 0.3, 0.1], [-1, -1, -1, -1]], atol=1e-6)
    plain = augment.flip_left_right(example, False)
    np.testing.assert_array_equal(plain["image"].numpy(), image)
    np.testing.assert_allclose(plain["boxes"].numpy(),
                               [[0.1, 0.2, 0.5, 0.7], [0.0, 0.9, 0.3, 1.0], [-1, -1, -1, -1]], atol=1e-6)


def test_crop_clips_boxes_and_drops_those_it_cuts_away():
    boxes = [[0.1, 0.1, 0.3, 0.3],  # inside the window
             [0.4, 0.4, 0.8, 0.8],  # half inside: clipped
             [0.6, 0.6, 0.9, 0.9],  # outside: dropped
             [0.5, 0.1, 0.7, 0.3]]  # touches the window's edge only: zero height, dropped
    out = preprocess.crop_to_window(_box_example(100, 100, boxes), tf.constant([0.0, 0.0, 0.5, 0.5]))
    assert out["image"].shape == (50, 50, 3)
    np.testing.assert_allclose(out["boxes"].numpy(), [[0.2, 0.2, 0.6, 0.6], [0.8, 0.8, 1.0, 1.0]], atol=1e-6)
    assert out["classes"].numpy().tolist() == [1, 2] and out["areas"].shape == (2,)


def test_canvas_moves_boxes_by_scale_and_offset_and_drops_those_off_the_canvas():
    # 100 x 200 at scale 2 on a 64 canvas: 64 x 128 pixels (x 0.64), the window from x = 32.
    transform = preprocess.canvas_transform(100, 200, 64, scale=2.0, offset_fraction=(0.0, 0.5))
    assert transform["offsets"].numpy().tolist() == [[0, 32]]
    boxes = [[0.1, 0.1, 0.5, 0.2],  # x 12.8..25.6 -> left of the window: dropped
             [0.2, 0.2, 0.6, 0.4],  # x 25.6..51.2 -> -6.4..19.2: clipped
             [0.5, 0.5, 0.9, 0.7],  # inside
             [0.0, 0.8, 0.3, 1.0]]  # x 102.4..128 -> right of the window: dropped
    out = preprocess.apply_canvas_transform(_box_example(100, 200, boxes), transform, 64)
    np.testing.assert_allclose(out["boxes"].numpy() * 64, [[12.8, 0.0, 38.4, 19.2], [32.0, 32.0, 57.6, 57.6]],
                               atol=1e-4)
    assert out["classes"].numpy().tolist() == [2, 3]
    np.testing.assert_allclose(out["canvas_scale"].numpy(), [0.64, 0.64])
    np.testing.assert_allclose(out["canvas_offset"].numpy(), [0.0, 50.0])


def test_clip_boxes_rule_in_pixels_and_normalized():
    pixels = [[-8.0, 4.0, 16.0, 40.0], [10.0, 10.0, 10.0, 20.0], [70.0, 0.0, 80.0, 8.0]]
    boxes, kept = geometry.clip_boxes(pixels, 32.0)  # a 32 x 32 canvas
    np.testing.assert_allclose(boxes.numpy(), [[0, 4, 16, 32], [-1, -1, -1, -1], [-1, -1, -1, -1]])
    assert kept.numpy().tolist() == [True, False, False]
    boxes, kept = geometry.clip_boxes(tf.zeros([0, 4]))
    assert boxes.shape == (0, 4) and kept.shape == (0,)


def test_clip_polygons_half_outside_square_and_dropped_parts():
    pts = tf.constant([[-0.5, 0.2], [0.5, 0.2], [0.5, 0.6], [-0.5, 0.6],  # half outside
                       [0.1, 0.1], [0.2, 0.1], [0.2, 0.2],  # inside, second part
                       [2.0, 2.0], [3.0, 2.0], [3.0, 3.0]])  # outside: instance 1 vanishes
    inst = tf.constant([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    part = tf.constant([0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    points, new_inst, new_part = geometry.clip_polygons(pts, inst, part, (0.0, 0.0), (1.0, 1.0))
    assert new_inst.numpy().tolist() == [0] * 7
    assert new_part.numpy().tolist() == [0, 0, 0, 0, 1, 1, 1]
    first = points.numpy()[:4]
    np.testing.assert_allclose(sorted(map(tuple, first)), [(0, 0.2), (0, 0.6), (0.5, 0.2), (0.5, 0.6)])
    # Only the second part survives when the first is cut away entirely.
    points, new_inst, new_part = geometry.clip_polygons(pts, inst, part, (0.6, 0.0), (1.0, 1.0))
    assert points.shape[0] == 0
    empty = geometry.clip_polygons(tf.zeros([0, 2]), tf.zeros([0], tf.int32), tf.zeros([0], tf.int32),
                                   (0.0, 0.0), (1.0, 1.0))
    assert empty[0].shape == (0, 2)


def test_keep_objects_renumbers_polygon_instances(examples):
    example = examples[0]
    kept = geometry.keep_objects(example, [False, True, True, False])
    assert kept["classes"].numpy().tolist() == example["classes"].numpy()[1:3].tolist()
    assert set(kept["polygon_instance"].numpy().tolist()) == {0, 1}
    src = example["polygon_points"].numpy()[example["polygon_instance"].numpy() == 2]
    np.testing.assert_allclose(kept["polygon_points"].numpy()[kept["polygon_instance"].numpy() == 1], src)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="scale_min"):
        augment.AugmentConfig(scale_min=2.0, scale_max=1.0)
    with pytest.raises(ValueError, match="flip_prob"):
        augment.AugmentConfig(flip_prob=1.5)


def test_segmentation_always_keeps_one_instance_even_when_the_crop_misses_it(examples):
    zoomed = augment.AugmentConfig(scale_min=2.0, scale_max=2.0)  # crops a quarter of the image
    fit = S / max(examples[1]["orig_size"].numpy())
    scales = set()
    for s in range(6):
        out = augment.augment_segmentation(examples[1], tf.constant([s, 1], tf.int64), S, zoomed)
        assert out["boxes"].shape[0] == 1 and out["polygon_points"].shape[0] >= 3
        assert np.all(out["polygon_instance"].numpy() == 0)
        assert_on_objects(out)
        scales.add(round(float(out["canvas_scale"][1]) / fit, 3))
    assert scales == {1.0, 2.0}  # zoomed crops that kept the instance, and the un-jittered fallback


@pytest.mark.slow
def test_keypoint_crop_is_scale_jittered_like_the_paper(examples):
    """After the 2x person crop the crop's longer side is s x S, s ~ U(0.3, 1.0); with
    the jitter off (1, 1) the crop equals the evaluation's deterministic one."""
    example = examples[0]
    person = int(preprocess.keypoint_candidates(example).numpy()[0])
    plain = preprocess.prepare_keypoint_instance(example, person, S)
    still = augment.AugmentConfig(flip_prob=0.0, keypoint_scale_min=1.0, keypoint_scale_max=1.0)
    out = augment.augment_keypoints(example, tf.constant([0, 3], tf.int64), S, still, PAIRS)
    for key in ("image", "boxes", "keypoints", "canvas_scale"):
        np.testing.assert_allclose(out[key].numpy(), plain[key].numpy(), atol=1e-5, err_msg=key)
    scales = []
    for s in range(12):
        out = augment.augment_keypoints(example, tf.constant([s, 3], tf.int64), S, keypoint_flip_pairs=PAIRS)
        scales.append(float(out["canvas_scale"][0] / plain["canvas_scale"][0]))
        assert_keypoints_on_dots(out)
    assert 0.29 <= min(scales) and max(scales) <= 1.01 and max(scales) - min(scales) > 0.3, scales
    assert augment.AugmentConfig().keypoint_scale_min == 0.3 and augment.AugmentConfig().keypoint_scale_max == 1.0
    with pytest.raises(ValueError, match="keypoint_scale_min"):
        augment.AugmentConfig(keypoint_scale_min=0.0)


def test_segmentation_and_captioning_keep_several_instances_and_captions(examples):
    """`num_instances` (the codec's sequences_per_image): every non-crowd instance and
    every caption of the image, in a random order."""
    still = augment.AugmentConfig(scale_min=1.0, scale_max=1.0, flip_prob=0.0)
    orders = set()
    for s in range(6):
        out = augment.augment_segmentation(examples[0], tf.constant([s, 2], tf.int64), S, still, PAIRS, 10)
        assert out["boxes"].shape[0] == 3 and assert_on_objects(out) == 3
        caps = augment.augment_captioning(examples[0], tf.constant([s, 2], tf.int64), S, still, PAIRS, 5)
        orders.add(tuple(caps["captions"].numpy().tolist()))
    assert orders == {(b"a red triangle", b"shapes and a person"), (b"shapes and a person", b"a red triangle")}
