"""Gives a unet-studio model the decision rule of another: copies `threshold`,
`threshold_views` and `gap_closing` from SOURCE's config into TARGET's checkpoint and writes
the result, weights only (no optimiser state), as OUT/model.unet and OUT/config.json.

Used to ship samples/model: the network trained on all 20 ISBI slices (no slice left to
choose its rule on) with the rule chosen on slices 15-19 for the same recipe's network
trained on slices 0-14 at the same point of its schedule (run A's last network).

    python3 set_rule.py SOURCE_MODEL_DIR TARGET_MODEL_DIR OUT_DIR
"""
import json
import os
import struct
import sys

MAGIC = b"UNETSTD1"


def sections(path):
    data = open(path, "rb").read()
    assert data[:8] == MAGIC, f"{path}: not a unet-studio checkpoint"
    out, at = [], 8
    while at < len(data):
        (n,) = struct.unpack("<Q", data[at : at + 8])
        out.append(data[at + 8 : at + 8 + n])
        at += 8 + n
    return out


source, target, out_dir = sys.argv[1:4]
rule = json.loads(sections(os.path.join(source, "model.unet"))[0])
meta_json, weights, *_ = sections(os.path.join(target, "model.unet"))
meta = json.loads(meta_json)
for key in ("threshold", "threshold_views", "gap_closing"):
    meta[key] = rule.get(key)
meta["note"] += (
    f"; decision rule from {os.path.basename(os.path.normpath(source))} "
    "(the same recipe trained on slices 0-14, chosen on slices 15-19)"
)
text = json.dumps(meta, indent=2).encode()
os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, "model.unet"), "wb") as f:
    f.write(MAGIC)
    for section in (text, weights, b""):
        f.write(struct.pack("<Q", len(section)))
        f.write(section)
with open(os.path.join(out_dir, "config.json"), "wb") as f:
    f.write(text)
