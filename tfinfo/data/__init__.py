"""tf.data pipelines and data sources: TFDS, image folders, .npz, the embedded default."""

from tfinfo.data.embedded import load_embedded
from tfinfo.data.image_splits import ImageSplits
from tfinfo.data.image_splits import check_class_count
from tfinfo.data.image_splits import float_scale
from tfinfo.data.image_splits import validate_image_arrays
from tfinfo.data.image_splits import validate_images
from tfinfo.data.image_splits import validate_labels
from tfinfo.data.indexed import indexed_dataset
from tfinfo.data.sources import load_npz
from tfinfo.data.sources import load_image_dir
from tfinfo.data.sources import load_spec
from tfinfo.data.splits import check_compatible
from tfinfo.data.splits import harmonize
from tfinfo.data.splits import labeled_dataset
from tfinfo.data.splits import labeled_unlabeled_split
from tfinfo.data.splits import transfer_dataset
from tfinfo.data.temporal_ensembling import temporal_ensembling_dataset
from tfinfo.data.tfds_loader import load_tfds

__all__ = [
    "ImageSplits",
    "check_class_count",
    "check_compatible",
    "float_scale",
    "harmonize",
    "indexed_dataset",
    "labeled_dataset",
    "labeled_unlabeled_split",
    "load_embedded",
    "load_image_dir",
    "load_npz",
    "load_spec",
    "load_tfds",
    "temporal_ensembling_dataset",
    "transfer_dataset",
    "validate_image_arrays",
    "validate_images",
    "validate_labels",
]
