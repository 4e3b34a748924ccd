"""big16.tif for the plane-by-plane memory figure of docs/results.md: 16 ImageJ Z slices of
2048 x 2048 8-bit, each a 4 x 4 tiling of samples/isbi2012 slice 0 shifted by (37 i, 53 i).
Usage: python3 make_big16.py SLICE00.tif OUT.tif  (slice 0 as a TIFF: convert slice00.png slice00.tif)"""
import sys

import numpy as np
import tifffile

base = tifffile.imread(sys.argv[1])
big = np.stack(
    [np.roll(np.tile(base, (4, 4)), (i * 37, i * 53), axis=(0, 1)) for i in range(16)]
).astype(np.uint8)
tifffile.imwrite(sys.argv[2], big, imagej=True, metadata={"axes": "ZYX"})
