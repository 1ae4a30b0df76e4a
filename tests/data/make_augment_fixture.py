"""Reference augmentations from torchvision on PIL images, for tests/data/test_data.c.

What: for the first 20 records of CIFAR-10's test_batch.bin and explicit
parameters (crop offsets, flip, rotation angle), the uint8 image that the
report's pipeline produces before ToTensor:
    F.pad(img, pad, fill=0) -> F.crop(top=crop_y, left=crop_x, 32, 32)
    -> F.hflip (if flip) -> F.rotate(angle, NEAREST, expand=False, fill=0)
These are the calls RandomCrop(32, padding=pad), RandomHorizontalFlip() and
RandomRotation(deg) make once they have drawn their parameters; the script
first checks that claim by running those transforms with a fixed torch seed
and replaying the same draws through the explicit calls.

How to run (from the repository root; torchvision and Pillow in the venv):
    /opt/torchvenv/bin/python tests/data/make_augment_fixture.py \
        ../shared/data/cifar-10-batches-bin tests/data/fixtures

Output (committed): tests/data/fixtures/augment_fixture.bin, little-endian:
    8 bytes  magic b"CRAUG1\\0\\0"
    uint32   case count, then per case:
    int32    image (record index in test_batch.bin), pad, crop_x, crop_y, flip
    float64  angle (degrees, counter-clockwise)
    uint8    [32][32][3] expected image, HWC
Generated with torchvision 0.29.2 and Pillow 13.0.0.
"""

import random
import struct
import sys
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

IMAGES = 20
RECORD = 3073
FIXED_ANGLES = [0.0, 5.0, -5.0, 4.99, -4.99, 2.5, -0.1, 45.0, 90.0,
                -90.0, 180.0, 270.0, 359.9, 1e-7, -30.0, 135.0,
                -1e-20, 180.00000000000003]  # the last two: PIL's scale-only path


def load_images(data_dir):
    raw = (Path(data_dir) / "test_batch.bin").read_bytes()[: IMAGES * RECORD]
    records = np.frombuffer(raw, dtype=np.uint8).reshape(IMAGES, RECORD)
    chw = records[:, 1:].reshape(IMAGES, 3, 32, 32)
    return [Image.fromarray(np.ascontiguousarray(x.transpose(1, 2, 0)), "RGB") for x in chw]


def explicit(img, pad, crop_x, crop_y, flip, angle):
    if pad > 0:
        img = F.pad(img, pad, fill=0, padding_mode="constant")
    img = F.crop(img, crop_y, crop_x, 32, 32)
    if flip:
        img = F.hflip(img)
    # RandomRotation.forward: F.rotate(img, angle, interpolation, expand, center, fill)
    img = F.rotate(img, angle, T.InterpolationMode.NEAREST, False, None, 0)
    return np.asarray(img, dtype=np.uint8)


def check_against_transforms(images):
    """The random transforms equal explicit() with the parameters they draw."""
    pipeline = T.Compose([T.RandomCrop(32, padding=2), T.RandomHorizontalFlip(),
                          T.RandomRotation(5)])
    for seed in range(50):
        img = images[seed % IMAGES]
        torch.manual_seed(seed)
        got = np.asarray(pipeline(img), dtype=np.uint8)
        torch.manual_seed(seed)
        top = int(torch.randint(0, 5, size=(1,)).item())   # RandomCrop.get_params: i, then j
        left = int(torch.randint(0, 5, size=(1,)).item())
        flip = bool(torch.rand(1) < 0.5)                    # RandomHorizontalFlip
        angle = float(torch.empty(1).uniform_(-5.0, 5.0).item())  # RandomRotation.get_params
        want = explicit(img, 2, left, top, flip, angle)
        assert np.array_equal(got, want), f"seed {seed}: transforms and explicit calls differ"


def cases():
    rng = random.Random(20240611)
    out = []
    image = 0
    for angle in FIXED_ANGLES:
        for pad, cx, cy, flip in [(0, 0, 0, 0), (2, 0, 4, 1), (2, 3, 1, 0)]:
            out.append((image % IMAGES, pad, cx, cy, flip, angle))
            image += 1
    for k in range(24):
        angle = rng.uniform(-5.0, 5.0) if k < 20 else rng.uniform(-180.0, 180.0)
        pad = 2 if k % 3 else 4
        out.append((image % IMAGES, pad, rng.randint(0, 2 * pad), rng.randint(0, 2 * pad),
                    rng.randint(0, 1), angle))
        image += 1
    return out


def main():
    data_dir, out_dir = sys.argv[1], Path(sys.argv[2])
    images = load_images(data_dir)
    check_against_transforms(images)
    todo = cases()
    blob = bytearray(b"CRAUG1\0\0" + struct.pack("<I", len(todo)))
    for image, pad, cx, cy, flip, angle in todo:
        pixels = explicit(images[image], pad, cx, cy, flip, angle)
        assert pixels.shape == (32, 32, 3)
        blob += struct.pack("<5id", image, pad, cx, cy, flip, angle) + pixels.tobytes()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "augment_fixture.bin").write_bytes(bytes(blob))
    print(f"{len(todo)} cases, {len(blob)} bytes; torchvision {torchvision.__version__}, "
          f"Pillow {PIL.__version__}")


if __name__ == "__main__":
    main()
