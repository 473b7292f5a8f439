"""Keras layers of tfinfo."""

from tfinfo.layers.image_preprocessing import ImagePreprocessing
from tfinfo.layers.measurement_noise import MeasurementNoise
from tfinfo.layers.pattern_leaky_relu import PatternLeakyReLU
from tfinfo.layers.pattern_max_pooling_2d import PatternMaxPooling2D
from tfinfo.layers.zero_entropy_noise import ZERO_ENTROPY_VARIANCE
from tfinfo.layers.zero_entropy_noise import ZeroEntropyNoise
from tfinfo.layers.zero_entropy_noise import inference_noise_off
from tfinfo.layers.zero_entropy_noise import zero_entropy_noise_layers

__all__ = ["ZERO_ENTROPY_VARIANCE", "ImagePreprocessing", "MeasurementNoise", "PatternLeakyReLU", "PatternMaxPooling2D", "ZeroEntropyNoise", "inference_noise_off", "zero_entropy_noise_layers"]
