"""scikit-learn's handwritten digits as an image-folder archive: the second image dataset that
hpsearch's defaults are judged on besides CIFAR-10 (issue 30), made here without a download.

The 1,797 grayscale images of 8x8 pixels (values 0-16, shipped inside scikit-learn) are scaled
to 0-255 and written as PNG files into ``train/<digit>/`` and ``test/<digit>/`` of a gzipped
tar archive, the test split stratified by digit and seeded: a study reads it with
``[data] dataset = "images"`` and ``path = "digits.tar.gz"``. Unlike CIFAR-10, a digit
mirrored left to right is often another digit or none, and a shift of 2 pixels moves it by a
quarter of the image: the data on which CIFAR-10's recipe (flips, shifts, whitening) may not
carry over.

Run: .venv/bin/python benchmarks/digits.py OUT.tar.gz [--test-fraction 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np


def write_digits(path: Path, *, test_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    """Write the archive at ``path`` (a new file: an existing one is refused); the number of
    images of each split."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255 / 16)), 0, 255).astype(np.uint8)
    indices = np.arange(len(images))
    train, test = train_test_split(indices, test_size=test_fraction, stratify=digits.target,
                                   random_state=seed)
    written = {}
    with tarfile.open(path, "x:gz") as archive:
        for split, chosen in (("train", train), ("test", test)):
            for index in sorted(chosen):
                buffer = io.BytesIO()
                Image.fromarray(images[index], mode="L").save(buffer, format="PNG")
                member = tarfile.TarInfo(f"{split}/{digits.target[index]}/{index:04d}.png")
                member.size = buffer.tell()
                buffer.seek(0)
                archive.addfile(member, buffer)
            written[split] = len(chosen)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the archive to write (.tar.gz); must not exist")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists: give a new path")
    written = write_digits(args.out, test_fraction=args.test_fraction, seed=args.seed)
    print(f"{args.out}: {written['train']} training and {written['test']} test images, "
          "8x8 grayscale, 10 classes")


if __name__ == "__main__":
    main()
