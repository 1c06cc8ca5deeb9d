"""`data.preprocess.canvas_pixels`: resize, window at the crop offset, padding bottom/right;
the official style (pad value, antialiasing) on request."""
import numpy as np
import pytest
import tensorflow as tf

from data import preprocess

IMAGE = tf.random.stateless_uniform([72, 120, 3], seed=[1, 2])


# 72 x 120 onto a 64 canvas: longer side -> scale * 64, offsets floor(slack * fraction).
@pytest.mark.parametrize("scale, offset, scaled, corner", [
    (1.0, (0.0, 0.0), (38, 64), (0, 0)),
    (1.3, (0.5, 0.25), (50, 83), (0, 4)),  # slack (0, 19)
    (2.0, (0.5, 0.25), (77, 128), (6, 16)),  # slack (13, 64)
    (0.6, (0.0, 0.0), (23, 38), (0, 0)),
])
def test_canvas_is_the_resized_image_window_padded_with_zeros(scale, offset, scaled, corner):
    transform = preprocess.canvas_transform(72, 120, 64, scale=scale, offset_fraction=offset)
    assert transform["scaled_sizes"].numpy().tolist() == [list(scaled)]
    assert transform["offsets"].numpy().tolist() == [list(corner)]
    np.testing.assert_allclose(transform["image_scales"].numpy()[0], np.array(scaled) / [72, 120], rtol=1e-6)
    resized = tf.image.resize(IMAGE, scaled).numpy()
    window = resized[corner[0]:corner[0] + 64, corner[1]:corner[1] + 64]
    expected = np.zeros([64, 64, 3], np.float32)
    expected[:window.shape[0], :window.shape[1]] = window
    np.testing.assert_array_equal(preprocess.canvas_pixels(IMAGE, transform, 64).numpy(), expected)


def test_pad_value_fills_exactly_the_padding_and_works_inside_tf_data():
    style = preprocess.CanvasStyle(pad_value=0.3)
    plain, _ = preprocess.canvas_image(IMAGE, 64)
    styled = next(iter(tf.data.Dataset.from_tensors(IMAGE).map(
        lambda image: preprocess.canvas_image(image, 64, style)[0])))
    content = np.zeros([64, 64, 1], bool)
    content[:38] = True  # 72 x 120 fits as 38 x 64
    # (x - 0.3) + 0.3 as the official code computes it: content moves by at most an ulp
    np.testing.assert_allclose(np.where(content, plain, 0.3), styled.numpy(), atol=1e-6, rtol=0)
    assert (styled.numpy()[38:] == np.float32(0.3)).all()


def test_antialiasing_changes_a_downscaled_canvas_only_where_the_image_is():
    plain, _ = preprocess.canvas_image(IMAGE, 64, preprocess.CanvasStyle(antialias=False))
    smooth, _ = preprocess.canvas_image(IMAGE, 64, preprocess.CanvasStyle(antialias=True))
    diff = np.abs(plain.numpy() - smooth.numpy())
    assert diff[:38].max() > 0.05 and diff[38:].max() == 0.0
    assert smooth.numpy()[:38].std() < plain.numpy()[:38].std()  # antialiasing low-passes the noise
