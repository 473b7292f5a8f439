import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_without_tensorflow_names_the_extras():
    script = "import sys; sys.modules['tensorflow'] = None; import tfinfo"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "tfinfo needs TensorFlow" in proc.stderr
    assert 'tfinfo[cpu]' in proc.stderr and 'tfinfo[gpu]' in proc.stderr


def test_every_public_class_round_trips_its_config():
    import keras

    from tfinfo.architectures import build_classifier
    from tfinfo.layers import ImagePreprocessing

    layer = ImagePreprocessing(image_size=20, channels=1, scale=0.5)
    assert ImagePreprocessing.from_config(layer.get_config()).get_config() == layer.get_config()
    out = layer(keras.ops.ones((2, 10, 10, 3)) * 4.0)
    assert tuple(out.shape) == (2, 20, 20, 1)
    assert float(keras.ops.max(abs(out - 2.0))) < 1e-6
    model = build_classifier("paper", input_shape=(28, 28, 1), seed=0)
    assert model.get_layer("features").output.shape[-1] == 128
    assert model.output_shape == (None, 10)
