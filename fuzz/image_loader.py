"""Coverage-guided fuzzing of the image loader (`--data`, `--val`, `predict`) with atheris, PIL's decoders
instrumented too: every input must end in an RGB image within the pixel and aspect bounds or an
AlexCompressError naming the file; anything else - another exception, a crash, a hang, memory past
-rss_limit_mb (a decompression bomb) - is a finding.

    pip install atheris
    python fuzz/image_loader.py fuzz/corpus-image -max_total_time=1800 -rss_limit_mb=2048
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["alexcompress", "PIL"]):
    from PIL import Image  # here, not lazily in load_image: the decoders are what is instrumented

    Image.init()  # every format plugin, inside the instrumented import
    from alexcompress.errors import AlexCompressError
    from alexcompress.train.data import MAX_ASPECT, MAX_IMAGE_PIXELS, load_image

PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz-image-"), "image")


def one_input(data: bytes) -> None:
    with open(PATH, "wb") as handle:
        handle.write(data)
    try:
        image = load_image(PATH)
    except AlexCompressError:
        return
    width, height = image.size
    assert image.mode == "RGB" and width * height <= MAX_IMAGE_PIXELS and max(image.size) <= MAX_ASPECT * max(min(image.size), 1)


def main() -> None:
    from fuzz.seeds import fuzz, image_seeds

    fuzz(one_input, image_seeds)


if __name__ == "__main__":
    main()
