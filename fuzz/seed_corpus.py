#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets from ../../shared/vectors/asoc-v1.json
and asoc-v2.json."""
import json, os, pathlib
here = pathlib.Path(__file__).resolve().parent
vectors = json.loads((here / ".." / ".." / "shared" / "vectors" / "asoc-v1.json").read_text())
vectors2 = json.loads((here / ".." / ".." / "shared" / "vectors" / "asoc-v2.json").read_text())
def put(target, name, data):
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)
frames = [bytes.fromhex(v["frame"]) for v in vectors["frame_header"]]
hellos = [bytes.fromhex(v["frame"]) for v in vectors["hello"]]
accepts = [bytes.fromhex(v["frame"]) for v in vectors["accept"]]
for i, f in enumerate(frames):
    put("frame_decoder", f"frame{i}", b"\x00" + f)
    put("server_connection", f"established{i}", b"\x21" + f)
    put("client_connection", f"established{i}", b"\x21" + f)
for i, h in enumerate(hellos):
    put("frame_decoder", f"hello{i}", b"\x01" + h)
    put("server_connection", f"hello{i}", b"\x00" + h)
for i, a in enumerate(accepts):
    put("frame_decoder", f"accept{i}", b"\x02" + a)
    put("client_connection", f"accept{i}", b"\x00" + a)
for i, v in enumerate(vectors["discovery"]):
    m = bytes.fromhex(v["message"])
    put("discovery", f"msg{i}", bytes([1, 0, len(m)]) + m)
# discovery_v2: the vector's own unix_ms as the receiver's clock, then the
# datagram, then a one-bit change of it and the same datagram again (a
# replay) a little later.
for i, v in enumerate(vectors2["discovery"]):
    m = bytes.fromhex(v["datagram"])
    clock = v["unix_ms"].to_bytes(8, "big")
    record = bytes([1, 0, len(m)]) + m
    flipped = bytearray(m)
    flipped[len(m) // 2] ^= 1
    put("discovery_v2", f"announcement{i}", clock + record)
    put("discovery_v2", f"replay{i}", clock + record + bytes([2, 10, len(m)]) + m)
    put("discovery_v2", f"flipped{i}", clock + bytes([1, 0, len(m)]) + bytes(flipped) + record)
print("seed corpora written under", here / "corpus")
