"""Seed 000's reported target test accuracies (Tables 1 and 3), for `tfinfo-compare`.

Keys are `(method, labeled)` with our method names; values are fractions (0..1).
"""

_NAMES = {
    "Standard": "standard",
    "TE": "te",
    "Mk-MMD": "mmd",
    "Lautum + MI": "lautum_mi",
    "Lautum": "lautum",
    "Lautum + TE": "lautum_te",
    "MI": "mi",
}

_TABLE_1 = """
Standard 50 34.02; TE 50 37.28; Mk-MMD 50 46.72; Lautum + MI 50 46.51; Lautum 50 48.42;
Lautum + TE 50 67.3; MI 50 70.50; Standard 100 57.58; TE 100 61.45; Mk-MMD 100 63.32;
Lautum + MI 100 62.01; Lautum 100 65.94; Lautum + TE 100 76.8; MI 100 78.38;
Standard 200 67.78; TE 200 74.87; Mk-MMD 200 80.35; Lautum + MI 200 76.31; Lautum 200 82.8;
Lautum + TE 200 84.5; MI 200 85.85;
Standard 500 75.01; Lautum 500 87.91; MI 500 89.40; Standard 1000 81.26; Lautum 1000 90.04;
MI 1000 90.53; Standard 2500 86.10; Lautum 2500 91.85; MI 2500 92.64; Standard 5000 89.40;
Lautum 5000 93.78; MI 5000 94.45
"""  # 500..5000 from Table 2

_TABLE_3 = """
Standard 100 39.90; TE 100 42.20; Mk-MMD 100 45.30; Lautum + MI 100 43.14; Lautum 100 46.42;
Lautum + TE 100 46.80; MI 100 53.10; Standard 200 52.80; TE 200 54.60; Mk-MMD 200 59.30;
Lautum + MI 200 55.44; Lautum 200 60.70; Lautum + TE 200 61.40; MI 200 63.20;
Standard 500 64.50; TE 500 66.50; Mk-MMD 500 68.00; Lautum + MI 500 66.93; Lautum 500 70.60;
Lautum + TE 500 71.05; MI 500 72.82
"""


def _parse(text):
    table = {}
    for entry in " ".join(text.split()).split(";"):
        *name, labeled, accuracy = entry.split()
        table[(_NAMES[" ".join(name)], int(labeled))] = float(accuracy) / 100.0
    return table


PAPER_RESULTS = {
    "mnist_notmnist": _parse(_TABLE_1),
    "cifar10_cifar100": _parse(_TABLE_3),
}
