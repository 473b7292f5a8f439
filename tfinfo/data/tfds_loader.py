"""TFDS image datasets (`tfds:NAME`), prepared in a data dir or downloaded.

Without network, TFDS's download of a dataset that is not prepared yet retries for
minutes before it fails with a traceback. `load_tfds` checks first, in seconds,
whether the download host answers, and says how to provide the data otherwise.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np

from tfinfo.data.image_splits import ImageSplits
from tfinfo.data.image_splits import validate_image_arrays
from tfinfo.data.image_splits import validate_labels

_TFDS_BATCH_SIZE = 1024
# TFDS's catalog downloads from (and first looks for prepared data on) Google Cloud
# Storage; a machine that cannot open a connection there is taken as offline.
DOWNLOAD_HOST = ("storage.googleapis.com", 443)
REACH_TIMEOUT_S = 3.0


def default_data_dir() -> str:
    """The TFDS data dir read now: `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`.

    (TFDS reads the variable once, when it is imported; this reads it per call.)
    """
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "tensorflow_datasets")


def _endpoint(host: str, port: int) -> tuple[str, int]:
    """Where a download to `host` connects first: the HTTPS proxy, if one applies."""
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.hostname:
            default = 443 if parsed.scheme == "https" else 80
            return parsed.hostname, parsed.port or default
    return host, port


def unreachable_reason(host: str = DOWNLOAD_HOST[0], port: int = DOWNLOAD_HOST[1],
                       timeout: float = REACH_TIMEOUT_S) -> str | None:
    """`None` if a TCP connection to `host:port` (or its proxy) opens within
    `timeout` seconds, else why not. Name resolution is bounded by `timeout` too."""
    host, port = _endpoint(host, port)
    result = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as e:
            result["error"] = f"{type(e).__name__}: {e}"

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if result.get("ok"):
        return None
    return f"{host}:{port} " + (f"is unreachable ({result['error']})" if "error" in result
                                else f"did not answer within {timeout:g} s")


def _offline_message(name: str, path, reason: str) -> str:
    return (f"Expected tfds:{name} to be prepared in the TFDS data dir, or its download to "
            "work. Received: it is not prepared in "
            f"{path} and {reason}. Without network, copy a prepared dataset (a folder "
            f"{name}/VERSION/ made by `tfds build {name}` or a first run with network) into "
            "a folder and set TFDS_DATA_DIR to that folder, or give the images as "
            "--source/--target dir:PATH (one subfolder per class) or npz:PATH "
            "(see docs/datasets.md)")


def _needs_network(builder) -> bool:
    """Whether preparing the (missing) variant folder of `builder` downloads.

    TFDS's own builders download; builders defined elsewhere may generate their data
    locally (their download errors are still reported). Under
    `tfds.testing.mock_data`, whose `download_and_prepare` fetches nothing, no
    builder does.
    """
    prepare = getattr(type(builder).download_and_prepare, "__module__", None) or ""
    if prepare.startswith("tensorflow_datasets.testing"):
        return False
    return type(builder).__module__.startswith("tensorflow_datasets.")


def _prepare(tfds, name: str, data_dir: str):
    """The builder of `name` in `data_dir`, prepared; offline errors in our format."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError("Expected the name of a registered TFDS dataset, e.g. 'mnist' or "
                         f"'cifar100'. Received: name={name!r} (not found)") from e
    # What `download_and_prepare` itself checks: an existing variant folder is reused.
    if builder.data_path.exists():
        builder.download_and_prepare()
        return builder
    if _needs_network(builder):
        reason = unreachable_reason()
        if reason is not None:
            raise ValueError(_offline_message(name, builder.data_path, reason))
    try:
        builder.download_and_prepare()
    except OSError as e:  # requests' ConnectionError and timeouts are OSErrors
        raise ValueError(_offline_message(
            name, builder.data_path,
            f"download_and_prepare failed ({type(e).__name__}: {e})")) from e
    return builder


def check_class_ids(classes: list[int], num_classes: int, name: str) -> None:
    """Refuses class ids outside `0..num_classes-1` of `tfds:name`."""
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"Expected class ids in 0..{num_classes - 1} for tfds:{name}. "
                         f"Received: classes={classes} (out of range: {bad})")


def load_tfds(name: str, *, classes: list[int] | None = None,
              data_dir: str | None = None, scale=None) -> ImageSplits:
    """Loads the `train` and `test` splits of a TFDS image dataset.

    A dataset not prepared in the data dir is downloaded and prepared first;
    for TFDS's own datasets, only if the download host answers within 3 s.

    Args:
        name: the TFDS name, e.g. `"mnist"` or `"cifar100"`.
        classes: optional subset of class ids, relabeled `0..K-1` in order.
        data_dir: the TFDS data directory; default `$TFDS_DATA_DIR` (read at
            this call), else `~/tensorflow_datasets`.
        scale: `None`, 1 or 255: the scale of float images (see
            `validate_image_arrays`); uint8 images are kept.

    Returns:
        An `ImageSplits`.

    Raises:
        ValueError: for an unknown dataset name, a dataset neither prepared
            nor downloadable (no network), a class id out of range (checked
            before any data are read when the dataset's info knows its
            classes), a split without examples (of the chosen classes), or
            data that fail validation.

    Example:

    >>> splits = load_tfds("cifar100", classes=[0, 10, 20])
    """
    import tensorflow_datasets as tfds

    builder = _prepare(tfds, name, os.fspath(data_dir or default_data_dir()))
    info = builder.info
    try:
        num_classes = int(info.features[info.supervised_keys[1]].num_classes)
    except (AttributeError, KeyError, TypeError, IndexError):
        num_classes = None  # unknown until the labels are read
    if classes is not None and num_classes is not None:
        check_class_ids(classes, num_classes, name)  # before reading any data
    datasets = builder.as_dataset(split=["train", "test"], batch_size=_TFDS_BATCH_SIZE,
                                  as_supervised=True, shuffle_files=False)
    images, arrays = {}, []
    for split, ds in zip(("train", "test"), datasets):
        batches = list(tfds.as_numpy(ds))
        if not batches:
            raise ValueError(f"Expected examples in the {split} split of tfds:{name}. "
                             "Received: none")
        images[f"`{split}` images of tfds:{name}"] = np.concatenate([b[0] for b in batches])
        y = validate_labels(np.concatenate([b[1] for b in batches]),
                            num_images=len(images[f"`{split}` images of tfds:{name}"]),
                            name=f"`{split}` labels of tfds:{name}")
        if num_classes is not None and y.max() >= num_classes:
            raise ValueError(f"Expected `{split}` labels of tfds:{name} in 0..{num_classes - 1} "
                             f"(its `num_classes`). Received: labels containing {y.max()}")
        arrays.append(y)
    x_train, x_test = validate_image_arrays(images, dataset=f"tfds:{name}",
                                            scale=scale).values()
    arrays = [x_train, arrays[0], x_test, arrays[1]]
    if num_classes is None:
        num_classes = int(max(arrays[1].max(), arrays[3].max())) + 1
    if classes is not None:
        check_class_ids(classes, num_classes, name)
        lut = np.full(num_classes, -1, np.int32)
        lut[classes] = np.arange(len(classes), dtype=np.int32)
        for i, split in ((0, "train"), (2, "test")):
            keep = lut[arrays[i + 1]] >= 0
            if not keep.any():
                raise ValueError(f"Expected examples of classes {classes} in the {split} split "
                                 f"of tfds:{name}. Received: none among {len(keep)} examples")
            arrays[i], arrays[i + 1] = arrays[i][keep], lut[arrays[i + 1][keep]]
        num_classes = len(classes)
    return ImageSplits(*arrays, num_classes=num_classes, name=name, original_rank=4)
