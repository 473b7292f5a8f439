"""Bad input at the data boundary: `tfinfo-transfer` exits with code 2 and an
"Expected ... Received: ..." message before training, and leaves the workdir of an
earlier run exactly as it was.

Every case runs the real CLI code (absl flags parsed, `trainers.transfer.main`). To
pay TensorFlow's import once, the cases run one after another in one fresh
process (`_DRIVER`: a fresh process also keeps `trainers.transfer`'s flags away from
`trainers.compare`'s, which share names); a few run as `python -m trainers.transfer`
to check the process exit code itself.
"""

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}

# Flags every case starts from (a case overrides or removes them): a short, cheap
# run, so that an input that slipped through would train quickly and then write.
_COMMON = {"--method": "standard", "--labeled": "8", "--batch_size": "16", "--pretrain_epochs": "1",
           "--finetune_epochs": "1", "--verbose": "0"}

_DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys, time, traceback
    from trainers import transfer

    cases = json.load(open(sys.argv[1]))
    results = {}
    for case in cases:
        out, err = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                transfer.FLAGS.unparse_flags()
                transfer.FLAGS(["tfinfo-transfer", *case["argv"]])
                if case.get("mock_tfds"):
                    import tensorflow_datasets as tfds
                    with tfds.testing.mock_data(num_examples=60):
                        code = transfer.main(["tfinfo-transfer"])
                else:
                    code = transfer.main(["tfinfo-transfer"])
        except BaseException:  # what app.run would turn into exit code 1 and a traceback
            code, err = 1, io.StringIO(err.getvalue() + traceback.format_exc())
        results[case["id"]] = {"code": code, "stderr": err.getvalue(), "stdout": out.getvalue(),
                               "seconds": time.perf_counter() - start}
    json.dump(results, open(sys.argv[2], "w"))
""")


def _npz(path, n_train=120, n_test=40, shape=(10, 10), classes=4, seed=0, rank3=True, **overrides):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % classes
        x = (rng.uniform(0, 60, size=(n,) + shape) + 40 * y[:, None, None]).astype(np.uint8)
        arrays[f"x_{split}"] = x if rank3 else x[..., None]
        arrays[f"y_{split}"] = y.astype(np.int64)
    arrays.update(overrides)
    np.savez(path, **arrays)
    return str(path)


def _image_dir(root, classes="ABCD", per_class=6, size=(10, 10), seed=0):
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.uniform(0, 60, size) + 40 * label, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return str(root)


class _Marker:
    """Unpickling this object creates a marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _earlier_run(workdir):
    """Files a finished earlier run leaves in its workdir."""
    files = {
        "results.json": json.dumps({"method": "lautum", "target_test_accuracy": 0.42}).encode(),
        "classifier.keras": os.urandom(256),
        "export/saved_model.pb": os.urandom(128),
        "export/variables/variables.index": os.urandom(64),
        "stage1/stage1.json": b'{"key": "lautum_s0_abc"}',
        "stage1/classifier.weights.h5": os.urandom(512),
        "checkpoints/stage2/epoch_3.weights.h5": os.urandom(64),
    }
    for rel, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(workdir, rel)), exist_ok=True)
        with open(os.path.join(workdir, rel), "wb") as f:
            f.write(data)


def _snapshot(workdir):
    """Every file (path -> its bytes in hex) and folder (path/ -> None) under
    `workdir`; None if it does not exist."""
    if not os.path.exists(workdir):
        return None
    state = {}
    for folder, _, files in os.walk(workdir):
        rel = os.path.relpath(folder, workdir)
        state[rel + "/"] = None
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                state[os.path.join(rel, name)] = f.read().hex()
    return state


def _make_data(d):
    """Writes every input file of `_cases(d)` into the folder `d`."""
    good = _npz(d / "src.npz")
    _npz(d / "tgt.npz", seed=1)
    _npz(d / "src4.npz", rank3=False)  # image folders give (N, H, W, C)
    _npz(d / "rank4.npz", seed=1, rank3=False)
    arrays = dict(np.load(good))
    nan = np.full((120, 10, 10), 100.0, np.float32)
    nan[5, 2, 3] = np.nan
    inf_test = np.full((40, 10, 10), 0.5, np.float32)
    inf_test[[1, 7], 0, 0] = np.inf
    huge = np.arange(120) % 4
    huge[17] = 10**9
    for name, overrides in {
        "flat": dict(x_train=np.zeros((120, 100), np.uint8)),
        "rgba": dict(x_test=np.zeros((40, 10, 10, 4), np.uint8)),
        "sizes": dict(x_test=np.zeros((40, 12, 12), np.uint8)),
        "ylen": dict(y_train=np.arange(119) % 4),
        "onehot": dict(y_train=np.eye(4)[np.arange(120) % 4]),
        "xstr": dict(x_train=np.full((120, 10, 10), "a")),
        "xbool": dict(x_train=np.ones((120, 10, 10), bool)),
        "yfrac": dict(y_train=np.arange(120) % 4 + 0.25),
        "ystr": dict(y_test=np.array(["cat"] * 40)),
        "neg": dict(x_train=np.full((120, 10, 10), -0.5)),
        "u16": dict(x_train=np.full((120, 10, 10), 1000, np.uint16)),
        "nan": dict(x_train=nan),
        "inf": dict(x_test=inf_test),
        "ynan": dict(y_test=np.where(np.arange(40) == 3, np.nan, 1.0)),
        "yneg": dict(y_train=np.arange(120) % 4 - 1),
        "huge": dict(y_train=huge),
        "gap": dict(y_train=np.arange(120) % 4 // 2 * 3),  # classes 0 and 3 only
        "empty": dict(x_train=np.zeros((0, 10, 10), np.uint8), y_train=np.zeros(0)),
        "notest": dict(x_test=np.zeros((0, 10, 10), np.uint8), y_test=np.zeros(0)),
    }.items():
        np.savez(d / f"{name}.npz", **{**arrays, **overrides})
    _npz(d / "few.npz", n_train=110, y_train=np.array([0] * 50 + [1] * 50 + [2] * 5 + [3] * 5))
    np.savez(d / "obj.npz", **{**arrays, "x_train": np.array([_Marker(str(d / "unpickled_obj")), 1],
                                                              dtype=object)})
    np.savez(d / "nokey.npz", **{k: v for k, v in arrays.items() if k != "y_test"})
    np.save(d / "single.npy", np.zeros((3, 10, 10)))
    data = bytearray((d / "src.npz").read_bytes())
    data[data.index(b"x_train.npy") + 500] ^= 0xFF  # a pixel byte of x_train: its CRC fails
    (d / "crc.npz").write_bytes(bytes(data))
    (d / "truncated.npz").write_bytes((d / "src.npz").read_bytes()[:3000])
    (d / "text.npz").write_text("x_train,y_train\n1,2\n")
    (d / "pickle.npz").write_bytes(pickle.dumps(_Marker(str(d / "unpickled_file"))))

    _image_dir(d / "letters")
    _image_dir(d / "corrupt_class")
    for f in (d / "corrupt_class" / "C").iterdir():
        f.write_bytes(f.read_bytes()[:40])  # truncated: a PNG signature, no pixels
    _image_dir(d / "corrupt_test" / "train")
    _image_dir(d / "corrupt_test" / "test", per_class=2, seed=1)
    for f in (d / "corrupt_test" / "test" / "B").iterdir():
        f.write_bytes(b"")
    _image_dir(d / "empty_class")
    os.makedirs(d / "empty_class" / "E")
    _image_dir(d / "odd_size")
    Image.fromarray(np.zeros((12, 9), np.uint8)).save(d / "odd_size" / "B" / "wide.png")
    _image_dir(d / "tiny", per_class=2)
    _image_dir(d / "wide_int")
    Image.fromarray(np.full((10, 10), 4000, np.int32)).save(d / "wide_int" / "D" / "deep.tiff")
    os.makedirs(d / "no_classes")
    (d / "no_classes" / "README").write_text("no class folders here")

    specs = {"source": f"npz:{d / 'src.npz'}", "target": f"npz:{d / 'tgt.npz'}"}
    for name, fields in {"three": dict(num_classes=3), "unknown": dict(lautum_weigth=0.1),
                         "labeled": dict(labeled="ten"), "batch": dict(batch_size="16"),
                         "seed": dict(seed=-1), "epochs": dict(pretrain_epochs="two"),
                         "zero": dict(num_classes=0)}.items():
        (d / f"{name}.json").write_text(json.dumps({**specs, **fields}))
    (d / "broken.json").write_text('{"labeled": 8,')
    (d / "config.yaml").write_text("labeled: 8\n")
    (d / "list.json").write_text("[8, 16]")


def _cases(d):
    """`(id, flags, facts, extras)` of every bad input whose files `_make_data(d)` writes.

    `facts` are strings the error message must contain: which argument, file or
    array, and what was received. Pure: builds strings only, so it also names the
    tests at collection time.
    """
    src, tgt, src4 = f"npz:{d / 'src.npz'}", f"npz:{d / 'tgt.npz'}", f"npz:{d / 'src4.npz'}"

    def npz(name):
        return f"npz:{d / name}"

    return [
        # data specs and files
        ("spec_unknown_prefix", {"--source": "csv:data.csv", "--target": tgt},
         ["Expected a data spec of the form", "Received: spec='csv:data.csv'"], {}),
        ("spec_without_path", {"--source": src, "--target": "npz:"}, ["Received: spec='npz:'"], {}),
        ("spec_bad_embedded_role", {"--source": "embedded:middle", "--target": tgt},
         ["Received: spec='embedded:middle'"], {}),
        ("npz_missing", {"--source": npz("missing.npz"), "--target": tgt},
         ["Expected an existing .npz file", f"Received: path='{d / 'missing.npz'}'"], {}),
        ("npz_not_a_zip", {"--source": npz("text.npz"), "--target": tgt},
         [f"Expected a readable .npz file at {d / 'text.npz'}. Received: "], {}),
        ("npz_truncated", {"--source": src, "--target": npz("truncated.npz")},
         [f"Expected a readable .npz file at {d / 'truncated.npz'}. Received: "], {}),
        ("npz_bad_crc", {"--source": npz("crc.npz"), "--target": tgt},
         [f"Expected `x_train` in {d / 'crc.npz'} to be a readable array",
          "Received: BadZipFile: Bad CRC-32"], {}),
        ("npz_pickle_file", {"--source": npz("pickle.npz"), "--target": tgt},
         [f"Expected a readable .npz file at {d / 'pickle.npz'}", "Received: ", "pickled"],
         {"never_created": "unpickled_file"}),
        ("npz_object_array", {"--source": npz("obj.npz"), "--target": tgt},
         [f"Expected `x_train` in {d / 'obj.npz'} to be a numeric array", "object arrays are refused",
          "Received: an object (pickled) array"], {"never_created": "unpickled_obj"}),
        ("npz_missing_array", {"--source": npz("nokey.npz"), "--target": tgt},
         ["Expected arrays x_train, y_train, x_test, y_test", "(missing ['y_test'])"], {}),
        ("npz_single_array", {"--source": npz("single.npy"), "--target": tgt},
         ["Expected an .npz archive of named arrays", "Received: a single array of type ndarray"], {}),
        # shapes
        ("x_flat", {"--source": npz("flat.npz"), "--target": tgt},
         [f"Expected `x_train` in {d / 'flat.npz'} to be images of shape", "Received: shape=(120, 100)"], {}),
        ("x_four_channels", {"--source": src, "--target": npz("rgba.npz")},
         [f"Expected `x_test` in {d / 'rgba.npz'} to be images", "Received: shape=(40, 10, 10, 4)"], {}),
        ("x_test_other_size", {"--source": npz("sizes.npz"), "--target": tgt},
         [f"Expected `x_test` in {d / 'sizes.npz'} to have the image shape of `x_train` (10, 10)",
          "Received: (12, 12)"], {}),
        ("y_length", {"--source": npz("ylen.npz"), "--target": tgt},
         [f"Expected `y_train` in {d / 'ylen.npz'} to hold one label per image (120)",
          "Received: 119 labels"], {}),
        ("y_one_hot", {"--source": src, "--target": npz("onehot.npz")},
         [f"Expected `y_train` in {d / 'onehot.npz'} to be labels of shape (N,)",
          "Received: shape=(120, 4)"], {}),
        # dtypes
        ("x_strings", {"--source": npz("xstr.npz"), "--target": tgt},
         [f"Expected `x_train` in {d / 'xstr.npz'} to be a numeric image array", "Received: dtype=<U1"], {}),
        ("x_bool", {"--source": src, "--target": npz("xbool.npz")},
         [f"Expected `x_train` in {d / 'xbool.npz'} to be a numeric image array", "Received: dtype=bool"], {}),
        ("y_fractional", {"--source": npz("yfrac.npz"), "--target": tgt},
         [f"Expected integer class labels in `y_train` in {d / 'yfrac.npz'}",
          "Received: 120 non-integer values such as 0.25"], {}),
        ("y_strings", {"--source": src, "--target": npz("ystr.npz")},
         [f"Expected integer class labels in `y_test` in {d / 'ystr.npz'}", "Received: dtype=<U3"], {}),
        # value ranges and non-finite values
        ("x_negative_floats", {"--source": npz("neg.npz"), "--target": tgt},
         [f"Expected pixel values in [0, 255] (or [0, 1] for floats) in `x_train` in {d / 'neg.npz'}",
          "Received: min=-0.5, max=-0.5"], {}),
        ("x_16_bit_values", {"--source": src, "--target": npz("u16.npz")},
         [f"in `x_train` in {d / 'u16.npz'}", "Received: min=1000, max=1000"], {}),
        ("x_nan", {"--source": npz("nan.npz"), "--target": tgt},
         [f"Expected finite pixel values in `x_train` in {d / 'nan.npz'}", "Received: 1 NaN or inf values"], {}),
        ("x_nan_first_run", {"--source": npz("nan.npz"), "--target": tgt},
         [f"Expected finite pixel values in `x_train` in {d / 'nan.npz'}", "Received: 1 NaN or inf values"],
         {"fresh": True}),  # no earlier run: the workdir must not be created
        ("x_inf_in_target_test", {"--source": src, "--target": npz("inf.npz")},
         [f"Expected finite pixel values in `x_test` in {d / 'inf.npz'}", "Received: 2 NaN or inf values"], {}),
        ("y_nan", {"--source": npz("ynan.npz"), "--target": tgt},
         [f"Expected integer class labels in `y_test` in {d / 'ynan.npz'}",
          "Received: 1 non-integer values such as nan"], {}),
        # label ranges and class coverage
        ("y_negative", {"--source": src, "--target": npz("yneg.npz")},
         [f"Expected non-negative class labels in `y_train` in {d / 'yneg.npz'}",
          "Received: labels containing -1"], {}),
        ("y_beyond_num_classes", {"--config": str(d / "three.json")},
         ["Expected source training labels in 0..2", "Received: labels containing [3]"], {}),
        ("y_huge_label", {"--source": src, "--target": npz("huge.npz")},
         ["Expected target training images of every class 0..1000000000 (num_classes=1000000001)",
          # 10**9 + 1 classes, 5 present (0..3 and 10**9), 5 listed, the rest counted
          f"Received: none of classes [4, 5, 6, 7, 8] and {10**9 + 1 - 5 - 5} more"], {}),
        ("target_class_missing_from_training", {"--source": src, "--target": npz("gap.npz")},
         ["Expected target training images of every class 0..3", "Received: none of classes [1, 2]"], {}),
        ("labeled_below_num_classes", {"--source": src, "--target": tgt, "--labeled": "3"},
         ["Expected `labeled` >= the number of classes (4)", "Received: labeled=3"], {}),
        ("labeled_beyond_a_class", {"--source": src, "--target": npz("few.npz"), "--labeled": "100"},
         ["Expected at least 25 training images of class 2", "Received: 5"], {}),
        ("labeled_beyond_the_target", {"--source": src, "--target": tgt, "--labeled": "500"},
         ["Expected `labeled` <= the 120 target training images", "Received: labeled=500"], {}),
        ("labeled_zero", {"--source": src, "--target": tgt, "--labeled": "0"},
         ["Expected `labeled` to be an integer >= 1", "Received: labeled=0"], {}),
        # empty splits
        ("source_train_empty", {"--source": npz("empty.npz"), "--target": tgt},
         [f"Expected `x_train` in {d / 'empty.npz'} to hold at least one non-empty image",
          "Received: shape=(0, 10, 10)"], {}),
        ("target_test_empty", {"--source": src, "--target": npz("notest.npz")},
         [f"Expected `x_test` in {d / 'notest.npz'} to hold at least one non-empty image",
          "Received: shape=(0, 10, 10)"], {}),
        ("dir_too_small_for_a_test_split", {"--source": src4, "--target": f"dir:{d / 'tiny'}"},
         [f"Expected enough images in the class folders of {d / 'tiny'} to hold out test_fraction=0.2",
          "Received: at most 2 readable images per class, an empty test split"], {}),
        # geometry
        ("rank_mismatch", {"--source": src, "--target": npz("rank4.npz")},
         ["Expected source and target images of the same rank",
          "Received: source rank 3 (N, H, W), target rank 4 (N, H, W, C)"], {}),
        ("rank3_npz_with_image_folder", {"--source": src, "--target": f"dir:{d / 'letters'}"},
         ["Expected source and target images of the same rank", "Received: source rank 3"], {}),
        # image folders
        ("dir_class_all_corrupt", {"--source": src4, "--target": f"dir:{d / 'corrupt_class'}"},
         [f"Expected at least one readable image in every class folder of {d / 'corrupt_class'}",
          "Received: none in 'C' (6 unreadable files)"], {}),
        ("dir_test_class_all_corrupt", {"--source": f"dir:{d / 'corrupt_test'}", "--target": src4},
         [f"Expected at least one readable image in every class folder of {d / 'corrupt_test' / 'test'}",
          "Received: none in 'B' (2 unreadable files)"], {}),
        ("dir_empty_class_folder", {"--source": src4, "--target": f"dir:{d / 'empty_class'}"},
         ["Expected at least one readable image in every class folder", "Received: none in 'E' (no files)"], {}),
        ("dir_image_of_another_size", {"--source": src4, "--target": f"dir:{d / 'odd_size'}"},
         [f"Expected all images in {d / 'odd_size'} to have the size (height, width) (10, 10)",
          f"Received: (12, 9) in {d / 'odd_size' / 'B' / 'wide.png'}"], {}),
        ("dir_32_bit_image_out_of_range", {"--source": src4, "--target": f"dir:{d / 'wide_int'}"},
         [f"in `{d / 'wide_int' / 'D' / 'deep.tiff'}`", "Received: min=4000, max=4000"], {}),
        ("dir_without_class_folders", {"--source": src4, "--target": f"dir:{d / 'no_classes'}"},
         [f"Expected one subfolder per class in {d / 'no_classes'}", "Received: no subfolders"], {}),
        ("dir_missing", {"--source": src4, "--target": f"dir:{d / 'nowhere'}"},
         ["Expected an existing image folder", f"Received: path='{d / 'nowhere'}'"], {}),
        # TFDS (mock data: never a download)
        ("tfds_class_out_of_range", {"--source": "tfds:mnist:classes=3,12", "--target": tgt},
         ["Expected class ids in 0..9 for tfds:mnist", "Received: classes=[3, 12] (out of range: [12])"],
         {"mock_tfds": True}),
        ("tfds_unknown_name", {"--source": src, "--target": "tfds:no_such_dataset_xyz"},
         ["Expected the name of a registered TFDS dataset", "Received: name='no_such_dataset_xyz' (not found)"],
         {"mock_tfds": True}),
        ("tfds_bad_class_list", {"--source": "tfds:mnist:classes=3,3", "--target": tgt},
         ["Expected distinct integer class ids", "Received: spec='tfds:mnist:classes=3,3'"], {}),
        # configs and other values
        ("config_unknown_field", {"--config": str(d / "unknown.json")},
         ["Expected configuration fields among", "Received: ['lautum_weigth']"], {}),
        ("config_missing", {"--config": str(d / "missing.json")},
         ["Expected an existing config file", f"Received: config='{d / 'missing.json'}'"], {}),
        ("config_not_an_object", {"--config": str(d / "list.json")},
         [f"Expected a JSON object in {d / 'list.json'}", "Received: list"], {}),
        ("config_unknown_format", {"--config": str(d / "config.yaml")},
         ["Expected a .py or .json config file", f"Received: config='{d / 'config.yaml'}'"], {}),
        ("config_labeled_not_a_number", {"--config": str(d / "labeled.json"), "--labeled": None},
         ["Expected `labeled` to be an integer >= 1", "Received: labeled='ten'"], {}),
        ("unknown_method", {"--source": src, "--target": tgt, "--method": "magic"},
         ["Expected --method to be one of", "Received: method='magic'"], {}),
        ("config_batch_size_a_string", {"--config": str(d / "batch.json"), "--batch_size": None},
         ["Expected `batch_size` to be an integer >= 1", "Received: batch_size='16'"], {}),
        ("config_malformed_json", {"--config": str(d / "broken.json")},
         [f"Expected a JSON object of configuration fields in {d / 'broken.json'}", "Received: "], {}),
        ("config_seed_negative", {"--config": str(d / "seed.json")},
         ["Expected `seed` to be an integer >= 0", "Received: seed=-1"], {}),
        ("config_epochs_not_a_number", {"--config": str(d / "epochs.json"), "--pretrain_epochs": None},
         ["Expected `pretrain_epochs` to be an integer >= 0", "Received: pretrain_epochs='two'"], {}),
        ("config_num_classes_zero", {"--config": str(d / "zero.json")},
         ["Expected `num_classes` to be None or an integer >= 2", "Received: num_classes=0"], {}),
    ]


def _argv(d, case_id, flags):
    workdir = d / "work" / case_id
    merged = {**_COMMON, "--workdir": str(workdir), **flags}
    return [f"{k}={v}" for k, v in merged.items() if v is not None], workdir


def _run_all(d):
    """Writes the inputs and an earlier run per case, runs every case through the CLI
    in one process, and returns `id -> outcome` (JSON: code, output, workdir before
    and after as `path -> hex bytes`)."""
    shutil.rmtree(d, ignore_errors=True)  # a worker that failed before may have left files
    d.mkdir(parents=True)
    _make_data(d)
    cases, todo = {}, []
    for case_id, flags, facts, extras in _cases(d):
        argv, workdir = _argv(d, case_id, flags)
        if not extras.get("fresh"):
            _earlier_run(workdir)
        cases[case_id] = dict(facts=facts, workdir=str(workdir), before=_snapshot(workdir),
                              never_created=extras.get("never_created"))
        todo.append({"id": case_id, "argv": argv, "mock_tfds": extras.get("mock_tfds", False)})
    (d / "cases.json").write_text(json.dumps(todo))
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(d / "cases.json"), str(d / "out.json")],
                          cwd=d, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = json.loads((d / "out.json").read_text())
    for case_id, case in cases.items():
        case.update(outcomes[case_id], after=_snapshot(case["workdir"]))
        if case["never_created"]:
            case["unpickled"] = (d / case["never_created"]).exists()
    return cases


@pytest.fixture(scope="module")
def driven(tmp_path_factory):
    """The outcomes of `_run_all`, computed once per session: under pytest-xdist the
    first worker computes them in the session's shared temporary folder and the
    others read them (the pattern of the pytest-xdist docs, with `fcntl` as lock)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _run_all(tmp_path_factory.mktemp("bad_input"))
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent / "bad_input"  # one per session
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "outcomes.json"
        if not done.exists():
            done.write_text(json.dumps(_run_all(shared / "data")))
        return json.loads(done.read_text())


def _params():
    import pathlib

    params = []
    for case_id, _, _, extras in _cases(pathlib.Path("/data")):
        marks = [pytest.mark.xfail(strict=True, reason=extras["xfail"])] if "xfail" in extras else []
        params.append(pytest.param(case_id, id=case_id, marks=marks))
    return params


def _assert_refused(code, stderr, facts, before, after):
    assert code == 2, stderr[-3000:]
    assert "tfinfo-transfer: error: Expected" in stderr and "Received" in stderr, stderr[-3000:]
    for fact in facts:
        assert fact in stderr, f"{fact!r} not in {stderr[-2000:]!r}"
    if before is None:  # a first run: no workdir may appear
        assert after is None, sorted(after)
        return
    assert after is not None and set(after) == set(before), sorted(set(after or {}) ^ set(before))
    for path, content in before.items():
        assert after[path] == content, f"{path} changed"


@pytest.mark.parametrize("case_id", _params())
def test_bad_input_is_refused_before_training_and_keeps_the_earlier_run(driven, case_id):
    case = driven[case_id]
    _assert_refused(case["code"], case["stderr"], case["facts"], case["before"], case["after"])
    assert "target_test_accuracy=" not in case["stdout"]
    if case["never_created"]:
        assert case["unpickled"] is False  # the marker file of the pickled object never appeared


def test_the_cases_cover_the_issue_list():
    import pathlib

    ids = [c[0] for c in _cases(pathlib.Path("/data"))]
    assert len(ids) == len(set(ids))
    for prefix in ("spec_", "npz_", "x_", "y_", "labeled_", "dir_", "tfds_", "config_", "rank"):
        assert any(i.startswith(prefix) for i in ids), prefix
    for word in ("empty", "nan", "inf", "corrupt", "pickle", "object", "missing", "huge"):
        assert any(word in i for i in ids), word


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "trainers.transfer", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


# Two through `python -m trainers.transfer` itself: the exit code of the process.
@pytest.mark.parametrize("case_id", ["npz_object_array", "x_nan_first_run"])
def test_the_process_exits_with_code_2(tmp_path, case_id):
    _make_data(tmp_path)
    ((_, flags, facts, extras),) = [c for c in _cases(tmp_path) if c[0] == case_id]
    argv, workdir = _argv(tmp_path, case_id, flags)
    if not extras.get("fresh"):
        _earlier_run(workdir)
    before = _snapshot(workdir)
    proc = _cli(argv, tmp_path)
    _assert_refused(proc.returncode, proc.stderr, facts, before, _snapshot(workdir))
    if extras.get("never_created"):
        assert not (tmp_path / extras["never_created"]).exists()


def test_a_bad_flag_value_exits_with_code_2(tmp_path):
    workdir = tmp_path / "run"
    _earlier_run(workdir)
    before = _snapshot(workdir)
    proc = _cli(["--labeled=ten", f"--workdir={workdir}"], tmp_path)  # fails before TF is imported
    _assert_refused(proc.returncode, proc.stderr, ["--labeled=ten", "'ten'"], before, _snapshot(workdir))
