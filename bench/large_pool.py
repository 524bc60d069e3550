"""What a study costs on a dataset far larger than it draws from: a 5-class ImageFolder of
10,400 images, mixes of 250, the CPU profile otherwise.

    python bench/large_pool.py [--per-class 2080] [--out DIR]

The folder is made from 5 AID classes (the local copy, or the hub): each image in its 8
orientations (rotations and mirror images, re-encoded as JPEG), as many as `--per-class`
a class. That is a cost benchmark, not an accuracy one: the study runs on it with the
pretrained base cached (`synthaug run -f params/ucmerced-cpu.yaml -p dataset.path DIR -p
study.total 250`) and the wall time, the count of images whose backbone features were
computed and the seconds they took are printed and written to
`bench/results/large_pool.json`.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from synthaug.classify.features import FeatureCache, feature_cache_path  # noqa: E402
from synthaug.config import load_config  # noqa: E402
from synthaug.data import open_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["Beach", "Farmland", "Forest", "Parking", "Viaduct"]
ORIENTATIONS = [None, *Image.Transpose]  # 8 distinct orientations with the identity


def make_folder(out: Path, per_class: int) -> Path:
    """`out/<class>/<n>.jpg`: each AID image of the 5 classes in up to 8 orientations."""
    pretrain = load_config(ROOT / "params" / "ucmerced-cpu.yaml").generator.pretrain
    assert pretrain is not None
    by_class: dict[str, list[bytes]] = defaultdict(list)
    for _ref, label, data in open_source(pretrain.data, CLASSES).scan():
        by_class[label].append(data)
    for label, images in by_class.items():
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        count = 0
        for turn in ORIENTATIONS:
            for data in images:
                if count == per_class:
                    break
                image = Image.open(io.BytesIO(data)).convert("RGB")
                image = image if turn is None else image.transpose(turn)
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=95)
                (folder / f"{count:05d}.jpg").write_bytes(buffer.getvalue())
                count += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=2080)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-large-pool"))
    args = parser.parse_args()
    out = Path(args.out)
    folder = make_folder(out / "data", args.per_class)
    images = sum(1 for _ in folder.glob("*/*.jpg"))
    overrides = {
        "name": "large-pool",
        "output_dir": str(out),
        "dataset.path": str(folder),
        "study.total": "250",
    }
    flags = [part for key, value in overrides.items() for part in ("-p", key, value)]
    command = ["synthaug", "run", "-f", "params/ucmerced-cpu.yaml", *flags]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    cfg = load_config(ROOT / "params" / "ucmerced-cpu.yaml", overrides)
    featured = len(FeatureCache(feature_cache_path(cfg)).rows)
    print(done.stdout[-2000:])
    print(save("large_pool", {
        "command": " ".join(command), "images": images, "wall_s": wall,
        "images_with_features": featured,
        "features_line": [line for line in done.stdout.splitlines() if "features of" in line],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
