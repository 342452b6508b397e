#!/usr/bin/env python3
"""Adds the C2SP tlog-cosignature (cosignature/v1, type 0x04) vector to tests/data/golden.json.

Independent of the Rust code: hashlib and the `cryptography` package's Ed25519 only.
Run from the repository root: python3 tests/data/gen/cosignature.py
"""
import base64, hashlib, json, struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

PATH = "tests/data/golden.json"
g = json.load(open(PATH, encoding="utf-8"))

seed = bytes([0x57] * 32)
name = "intermediate.kokuho.example"
time = 1764547200  # 2025-12-01T00:00:00Z
priv = Ed25519PrivateKey.from_private_bytes(seed)
pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
key_id = hashlib.sha256(name.encode() + b"\n" + b"\x04" + pub).digest()[:4]
vkey = name + "+" + key_id.hex() + "+" + base64.b64encode(b"\x04" + pub).decode()

note = g["checkpoint"]
text = note[: note.rindex("\n\n") + 1]
msg = f"cosignature/v1\ntime {time}\n".encode() + text.encode()
sig = priv.sign(msg)
line = "\u2014 " + name + " " + base64.b64encode(key_id + struct.pack(">Q", time) + sig).decode() + "\n"

g["cosigner_seed_hex"] = seed.hex()
g["cosigner_vkey"] = vkey
g["cosignature_time"] = time
g["cosigned_checkpoint"] = note + line
json.dump(g, open(PATH, "w", encoding="utf-8"), ensure_ascii=False, indent=2)
open(PATH, "a").write("\n")
