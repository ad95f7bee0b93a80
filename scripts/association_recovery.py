"""Does the gesture-phone association table recover the planted mapping? (synthetic corpora)

For each planted gesture, takes the learned gesture whose activity matches it best
(``activation_best_row`` in evaluation/details.json) and checks whether that gesture's most
associated phone (evaluation/gesture_phone_association.csv) is one the planted gesture
realises (``gesture_phones`` in data/raw/ground_truth.npz). Run from the project root after
`dvc repro`: ``python scripts/association_recovery.py``.
"""

from __future__ import annotations

import csv
import json

import numpy as np


def main() -> None:
    table: dict[int, list[tuple[float, str]]] = {}
    with open("evaluation/gesture_phone_association.csv") as handle:
        for row in csv.DictReader(handle):
            table.setdefault(int(row["gesture"]), []).append((float(row["auc"]), row["phone"]))
    best_row = json.load(open("evaluation/details.json"))["neural"]["activation_best_row"]
    with np.load("data/raw/ground_truth.npz") as truth:
        names, phones = [str(n) for n in truth["gesture_names"]], [str(p) for p in truth["gesture_phones"]]
    hits = 0
    for name, planted, row in zip(names, phones, best_row):
        top = sorted(table.get(row, []), reverse=True)[:3]
        hit = bool(top) and top[0][1] in planted.split()
        hits += hit
        shown = ", ".join(f"{phone} {auc:.2f}" for auc, phone in top)
        print(f"{name:14s} ({planted:9s}) -> gesture {row:3d}: {shown}{'  hit' if hit else ''}")
    print(f"the top phone is a planted phone for {hits} of {len(names)} planted gestures")


if __name__ == "__main__":
    main()
