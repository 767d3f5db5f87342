#!/usr/bin/env python3
"""Runs the real Python ASoc implementation as a peer for asoc-cli's tests.

The implementation (shared/peers/asoc-python, unmodified) is imported from
the directory in ASOC_PYTHON_DIR. Nothing of it is changed: its
`Connection.recv_frame`, `Connection.close` and `NodeReady._connect_peer`
are wrapped in this process only, to report what crossed the wire (every
received stream's length and SHA-256, every dial, every close); the wrappers
call the originals and change nothing on the wire.

Usage:
  peer.py [--host H] [--port P] [--static-peer HOST:PORT] [--discovery]
          [--community C]

The API key is ASOC_API_KEY (its UTF-8 bytes, as the implementation does).
Discovery stays off unless --discovery is given; the tests pass it only
inside a network namespace they created, because the implementation then
broadcasts to 255.255.255.255.

Standard output carries one JSON object per line for the test (lines not
starting with `{` are the implementation's own prints). Standard input takes
one command per line:

  send SIZE SEED CHUNK [PEER]
                         stream_tensor of SIZE deterministic bytes (seeded
                         by SEED) in frames of CHUNK bytes, to node id PEER
                         (default: a fresh id, which the implementation
                         answers with its first connection); reports `sent`
                         with the SHA-256, or `send_error`
  peers                  reports `peers`: its connection keys and the node
                         ids it knows (`get_peer_ids`)
  discovered             reports `discovered`: the node ids its discovery
                         recorded, with their addresses
  quit                   shuts the node down and exits 0

End of input acts as quit.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import time
import uuid

sys.path.insert(0, os.environ["ASOC_PYTHON_DIR"])

from asoc.node_ready import Connection, NodeReady  # noqa: E402
from asoc.protocol_binary import (  # noqa: E402
    FRAME_ACCEPT,
    FRAME_DATA,
    FRAME_END,
    FRAME_HELLO,
    bytes_to_uuid,
)

_started = time.monotonic()


def emit(event, **fields):
    fields["event"] = event
    fields["t"] = round(time.monotonic() - _started, 3)
    print(json.dumps(fields), flush=True)


def tensor(size, seed):
    """SIZE deterministic bytes; the receiver's SHA-256 is compared with ours."""
    rng = random.Random(seed)
    block = 1 << 20
    return b"".join(rng.randbytes(min(block, size - i)) for i in range(0, size, block))


# ---- wrappers: observe, never alter ----------------------------------------

_next_conn = [0]


def conn_id(conn):
    cid = getattr(conn, "_test_id", None)
    if cid is None:
        _next_conn[0] += 1
        cid = conn._test_id = _next_conn[0]
        conn._test_streams = {}
        try:
            peer = conn.writer.get_extra_info("peername")
            conn._test_peer = "%s:%d" % (peer[0], peer[1])
        except Exception:
            conn._test_peer = None
    return cid


_orig_recv = Connection.recv_frame


async def recv_frame(self):
    cid = conn_id(self)
    try:
        frame = await _orig_recv(self)
    except Exception as e:
        emit("recv_error", conn=cid, addr=self._test_peer, error=str(e) or repr(e))
        raise
    ftype, stream, seq, payload = frame
    if ftype == FRAME_HELLO:
        node = str(bytes_to_uuid(payload[:16])) if len(payload) >= 16 else None
        emit("hello", conn=cid, addr=self._test_peer, node=node)
    elif ftype == FRAME_ACCEPT:
        emit("accept", conn=cid, addr=self._test_peer)
    elif ftype == FRAME_DATA:
        st = self._test_streams.setdefault(stream, [hashlib.sha256(), 0, 0, 0])
        st[0].update(payload)
        st[1] += len(payload)
        st[2] += 1
        st[3] = max(st[3], len(payload))
    elif ftype == FRAME_END:
        st = self._test_streams.pop(stream, [hashlib.sha256(), 0, 0, 0])
        emit(
            "stream",
            conn=cid,
            addr=self._test_peer,
            stream=stream,
            seq=seq,
            bytes=st[1],
            frames=st[2],
            max_frame=st[3],
            sha256=st[0].hexdigest(),
        )
    return frame


Connection.recv_frame = recv_frame

_orig_close = Connection.close


async def close(self):
    cid = conn_id(self)
    if not getattr(self, "_test_closed", False):
        self._test_closed = True
        emit("closed", conn=cid, addr=self._test_peer)
    await _orig_close(self)


Connection.close = close

_orig_connect = NodeReady._connect_peer


async def connect_peer(self, host, port):
    connected = [k.decode() for k in self.peers if isinstance(k, bytes) and k.startswith(b"temp_")]
    emit("dial", host=host, port=port, already=connected)
    await _orig_connect(self, host, port)
    ok = ("temp_%s:%d" % (host, port)).encode() in self.peers
    emit("dialed", host=host, port=port, ok=ok)


NodeReady._connect_peer = connect_peer


# ---- the node and its commands ----------------------------------------------


def snapshot(node):
    keys = []
    for k in node.peers:
        if isinstance(k, bytes) and k.startswith(b"temp_"):
            keys.append(k.decode())
        else:
            keys.append(str(bytes_to_uuid(k)))
    return keys


async def run(args):
    node = NodeReady(
        community=args.community,
        api_key=os.environ["ASOC_API_KEY"],
        static_peers=[args.static_peer] if args.static_peer else None,
        enable_discovery=args.discovery,
        host=args.host,
        port=args.port,
    )
    await node.start()
    for _ in range(1000):
        if node._server is not None and node._server.sockets:
            break
        await asyncio.sleep(0.01)
    else:
        emit("error", error="the node's server did not start within 10 s")
        return 1
    port = node._server.sockets[0].getsockname()[1]
    emit("listening", node=node.node_id, port=port, discovery=node.enable_discovery)

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            break
        cmd = words[0]
        if cmd == "send":
            size, seed, chunk = int(words[1]), int(words[2]), int(words[3])
            peer = words[4] if len(words) > 4 else str(uuid.uuid4())
            data = tensor(size, seed)
            digest = hashlib.sha256(data).hexdigest()
            try:
                # With no connection under that id the implementation uses
                # its first connection (a dialed peer's id is never known).
                await node.stream_tensor(peer, data, chunk_size=chunk)
            except Exception as e:
                emit("send_error", bytes=size, error=str(e) or repr(e), kind=type(e).__name__)
            else:
                emit("sent", bytes=size, sha256=digest, chunk=chunk, peer=peer)
            del data
        elif cmd == "peers":
            emit("peers", keys=snapshot(node), ids=node.get_peer_ids())
        elif cmd == "discovered":
            found = await node.discovery.get_peers()
            emit(
                "discovered",
                peers={str(bytes_to_uuid(k)): "%s:%d" % v for k, v in found.items()},
            )
        else:
            emit("error", error="unknown command %r" % cmd)
    await node.shutdown()
    emit("shutdown")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--static-peer")
    p.add_argument("--discovery", action="store_true")
    p.add_argument("--community", default="asoc-python-interop")
    args = p.parse_args()
    rc = asyncio.run(run(args))
    sys.stdout.flush()
    # The implementation leaves tasks (re-dial, discovery) running forever.
    os._exit(rc)


if __name__ == "__main__":
    main()
