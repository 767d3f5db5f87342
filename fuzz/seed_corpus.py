#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets from ../../shared/vectors/asoc-v1.json
and asoc-v2.json (derived here at every run, never stored)."""
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

# v2: inputs of server_connection_v2 are mode | server clock (8) | rest and
# of client_connection_v2 mode | rest (see the targets). Mode bit 0: the
# target completes a genuine handshake first; bit 1: rest is frames to seal,
# encoded type(1) stream_id(4) seq(4) length(2) plaintext; bit 2: the other
# suite (server) or an expected peer id (client); bits 3..: read size.
v2 = vectors2
def plain(frames, side):
    out = b""
    for f in frames:
        if f["from"] != side:
            continue
        p = bytes.fromhex(f["plaintext"])
        out += bytes([f["type"]]) + f["stream_id"].to_bytes(4, "big") + f["seq"].to_bytes(4, "big")
        out += len(p).to_bytes(2, "big") + p
    return out
for i, h in enumerate(v2["handshake"]):
    clock = h["client_unix_ms"].to_bytes(8, "big")
    hello = bytes.fromhex(h["hello_frame"])
    accept = bytes.fromhex(h["accept_frame"])
    confirm = bytes.fromhex(h["confirm_frame"])
    wire = lambda side: b"".join(bytes.fromhex(f["frame"]) for f in h["frames"] if f["from"] == side)
    other_suite = 4 if h["suite"] == 2 else 0
    for step, tag in ((0, ""), (1, "_bytewise")):
        m = step << 3
        # Raw: the vector's HELLO2 decrypts (its key is held, its clock
        # given), then its CONFIRM fails against this server's ACCEPT2.
        put("server_connection_v2", f"vector{i}{tag}", bytes([m]) + clock + hello + confirm + wire("client"))
        put("server_connection_v2", f"stale{i}{tag}", bytes([m]) + (h["client_unix_ms"] + 60_001).to_bytes(8, "big") + hello)
        put("server_connection_v2", f"sealed{i}{tag}", bytes([m | 3 | other_suite]) + clock + plain(h["frames"], "client"))
        put("server_connection_v2", f"established{i}{tag}", bytes([m | 1 | other_suite]) + clock + wire("client"))
        put("client_connection_v2", f"vector{i}{tag}", bytes([m]) + accept + wire("server"))
        put("client_connection_v2", f"sealed{i}{tag}", bytes([m | 3]) + plain(h["frames"], "server"))
        put("client_connection_v2", f"expected{i}{tag}", bytes([m | 7]) + plain(h["frames"], "server"))
        put("client_connection_v2", f"established{i}{tag}", bytes([m | 1]) + wire("server"))

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
