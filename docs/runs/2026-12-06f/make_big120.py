"""A 120 x 1024 x 1024 16-bit ImageJ stack (240 MiB) for the app's memory figure: each slice
tiles four of the ISBI 2012 training slices 0-5 (8-bit raw dumps, `convert sliceNN.png
-depth 8 gray:sNN.raw`), scaled by 200 and offset by its index so that slices differ.
Usage: make_big120.py RAW_FOLDER OUT.tif"""
import sys

import numpy as np
import tifffile

raw, out = sys.argv[1], sys.argv[2]
sl = [np.fromfile(f"{raw}/s{i:02d}.raw", dtype=np.uint8).reshape(512, 512) for i in range(6)]
st = np.stack(
    [
        np.block([[sl[z % 6], sl[(z + 1) % 6]], [sl[(z + 2) % 6], sl[(z + 3) % 6]]]).astype(np.uint16) * 200 + z
        for z in range(120)
    ]
)
tifffile.imwrite(out, st, imagej=True, metadata={"axes": "ZYX"})
