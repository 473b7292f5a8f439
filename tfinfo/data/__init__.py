"""tf.data pipelines and data sources: TFDS, image folders, .npz, the embedded default."""

from tfinfo.data.embedded import load_embedded
from tfinfo.data.image_splits import ImageSplits
from tfinfo.data.image_splits import validate_images
from tfinfo.data.image_splits import validate_labels
from tfinfo.data.indexed import indexed_dataset
from tfinfo.data.sources import load_npz
from tfinfo.data.sources import load_spec
from tfinfo.data.splits import check_compatible
from tfinfo.data.splits import harmonize
from tfinfo.data.splits import labeled_dataset
from tfinfo.data.splits import labeled_unlabeled_split
from tfinfo.data.splits import transfer_dataset
from tfinfo.data.temporal_ensembling import temporal_ensembling_dataset

__all__ = [
    "ImageSplits",
    "check_compatible",
    "harmonize",
    "indexed_dataset",
    "labeled_dataset",
    "labeled_unlabeled_split",
    "load_embedded",
    "load_npz",
    "load_spec",
    "temporal_ensembling_dataset",
    "transfer_dataset",
    "validate_images",
    "validate_labels",
]
