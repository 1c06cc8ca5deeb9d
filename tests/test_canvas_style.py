"""`data.preprocess.canvas_pixels`: keras-cv's pixels by default, the official style on request."""
import numpy as np
import pytest
import tensorflow as tf

from data import preprocess

IMAGE = tf.random.stateless_uniform([72, 120, 3], seed=[1, 2])


@pytest.mark.parametrize("scale, offset", [(1.0, (0.0, 0.0)), (1.3, (0.5, 0.25)), (0.6, (0.0, 0.0))])
def test_default_style_gives_keras_cv_jittered_resize_pixels(scale, offset):
    transform = preprocess.canvas_transform(72, 120, 64, scale=scale, offset_fraction=offset)
    expected = preprocess._jittered_resize(64).augment_images(IMAGE[None], transform)[0]
    np.testing.assert_array_equal(preprocess.canvas_pixels(IMAGE, transform, 64).numpy(), expected.numpy())


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
