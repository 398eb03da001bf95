"""A token store's image kept in a file next to the database, so that a new connection (a server
starting, another process, ``mailtoaster score`` run once) loads in a few hundredths of a second what
it would otherwise build from every row of ``tokens`` in a few tenths.

The file is a cache: it is only ever used for the state of ``tokens`` it was made from, which its
``generation`` names (a random value the store sets in ``meta`` whenever ``tokens`` changes, so a
database restored from a backup cannot meet a file made from a later state of the same file), and
anything wrong with it (another generation, a short or damaged file, a CRC-32 that does not match,
another byte order) makes the reader build the image from the database as if there were no file.
It is written to a temporary name and renamed into place, so a reader sees a whole file or none;
a file that cannot be written is left unwritten.

Layout: :data:`MAGIC`, one line of JSON (generation, buckets, overflow rows, CRC-32 of what
follows, byte order), then the image's arrays as 64-bit integers in native order: the bucket ids
(buckets x 8), the counts (buckets x 8 x 2) and the overflow's ids, spam and ham counts.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import zlib
from contextlib import suppress
from pathlib import Path

import numpy as np

from mailtoaster.spam.counts import CountImage, Counts

MAGIC = b"mailtoaster token image 1\n"
MIN_GENERATION = 16
"""A generation shorter than this (the counter older versions kept) never names a file."""
_HEADER_LIMIT = 4096


def save_image(path: Path, generation: str, image: CountImage) -> bool:
    """Write ``image`` (``tokens`` at ``generation``, without the journal) to ``path``; False when
    it could not be written (the image is a cache: nothing depends on the file being there)."""
    if len(generation) < MIN_GENERATION:
        return False
    arrays = [np.ascontiguousarray(array) for array in (image.ids, image.counts, *image.overflow)]
    crc = 0
    for array in arrays:
        crc = zlib.crc32(array.data, crc)
    header = {
        "generation": generation,
        "buckets": len(image.ids),
        "overflow": len(image.overflow[0]),
        "crc32": crc,
        "byteorder": sys.byteorder,
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(MAGIC + json.dumps(header).encode() + b"\n")
            for array in arrays:
                file.write(array.data)
        os.replace(temporary, path)
    except OSError:
        with suppress(OSError):
            temporary.unlink()
        return False
    return True


def load_image(path: Path, generation: str) -> CountImage | None:
    """The image in ``path`` when it is a whole, undamaged image of ``tokens`` at ``generation``;
    None otherwise (no file, another generation, anything wrong with it)."""
    if len(generation) < MIN_GENERATION:
        return None
    try:
        with open(path, "rb") as file:
            if file.read(len(MAGIC)) != MAGIC:
                return None
            header = json.loads(file.readline(_HEADER_LIMIT))
            if header.get("generation") != generation or header.get("byteorder") != sys.byteorder:
                return None
            buckets, overflow, crc = int(header["buckets"]), int(header["overflow"]), int(header["crc32"])
            if buckets <= 0 or overflow < 0:
                return None
            size = buckets * 8 * 3 + overflow * 3
            values: Counts = np.fromfile(file, dtype=np.int64, count=size)
            if len(values) != size or file.read(1):
                return None
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None
    if zlib.crc32(values.data) != crc:
        return None
    ids = values[: buckets * 8].reshape(buckets, 8)
    counts = values[buckets * 8 : buckets * 24].reshape(buckets, 8, 2)
    rest = values[buckets * 24 :]
    try:
        return CountImage.of_tables(
            ids, counts, (rest[:overflow], rest[overflow : 2 * overflow], rest[2 * overflow :])
        )
    except ValueError:
        return None
