#!/usr/bin/env python3
"""Writes the corpus of bad input files that tests/bad_inputs.rs runs every loader over.
Pure standard library, so it runs anywhere: python3 tests/bad_inputs/make_corpus.py"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def png(width, height, rows, bit_depth=8, colour=0, truncate=None, ihdr_only=False):
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0))
    if not ihdr_only:
        raw = b"".join(b"\x00" + r for r in rows)
        out += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return out[:truncate] if truncate else out


def tiff(width, height, pixels_bytes, bits=8, sample_format=1, pages=1):
    """Little-endian baseline TIFF, one strip per page, uncompressed."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    offset = 8
    for p in range(pages):
        entries = [
            (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, 1),
            (262, 3, 1, 1), (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height),
            (279, 4, 1, len(pixels_bytes)), (339, 3, 1, sample_format),
        ]
        ifd_size = 2 + 12 * len(entries) + 4
        data_offset = offset + ifd_size
        next_ifd = data_offset + len(pixels_bytes) if p + 1 < pages else 0
        ifd = struct.pack("<H", len(entries))
        for tag, typ, count, value in entries:
            if tag == 273:
                value = data_offset
            if typ == 3:
                ifd += struct.pack("<HHIHH", tag, typ, count, value, 0)
            else:
                ifd += struct.pack("<HHII", tag, typ, count, value)
        ifd += struct.pack("<I", next_ifd)
        out += ifd + pixels_bytes
        offset = next_ifd
    return bytes(out)


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


grey64 = [bytes((x * 4 + y) % 256 for x in range(64)) for y in range(64)]
write("image_64.png", png(64, 64, grey64))
write("labels_32.png", png(32, 32, [bytes([1] * 32)] * 32))
write("labels_empty_64.png", png(64, 64, [bytes(64)] * 64))
write("zero_size.png", png(0, 0, [], ihdr_only=True))
write("huge_65536.png", png(65536, 65536, [], ihdr_only=True))
write("truncated.png", png(64, 64, grey64, truncate=90))
write("garbage.png", bytes((i * 37 + 11) % 256 for i in range(300)))
write("corrupt.tif", b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 40) + bytes(range(200)))
write("huge_65536.tif", tiff(65536, 65536, b"\x00" * 16))
write("zero_size.tif", tiff(0, 0, b""))
write("nan_float.tif", tiff(2, 2, struct.pack("<4f", 0.5, float("nan"), 1.0, 2.0), bits=32, sample_format=3))
write("inf_float.tif", tiff(2, 2, struct.pack("<4f", 0.5, 1.0, float("inf"), 2.0), bits=32, sample_format=3))
write("not_an_image.txt", b"this is not an image\n")
# A two-page stack whose pages differ in size: page 1 claims 8x2 with the same 16 bytes.
two = bytearray(tiff(4, 4, bytes(16), pages=2))
# Patch the second IFD's width (first entry value) to 8 and height to 2.
second_ifd = struct.unpack_from("<I", two, 8 + 2 + 12 * 10)[0]
struct.pack_into("<I", two, second_ifd + 2 + 8, 8)
struct.pack_into("<I", two, second_ifd + 2 + 12 + 8, 2)
write("pages_of_two_sizes.tif", bytes(two))
