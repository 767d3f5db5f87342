#!/usr/bin/env python3
"""A small, independent ASoc v1 client for the conformance suite's client mode.

Written from WIRE.md alone (shared/WIRE.md: sections 1-4 and 6); it imports
nothing from the Rust workspace and needs only Python's standard library.

The suite runs it once per dial (``asoc conformance client --exec
"python3 conformance/shims/asoc_client.py"``) with these variables:

  ASOC_TESTCASE     the case id, such as R1-5.4/2
  ASOC_HOST         where the suite listens
  ASOC_PORT
  ASOC_API_KEY      the key string; its UTF-8 bytes are the HMAC key (WIRE.md 1)
  ASOC_COMMUNITY    unused by a client (discovery is UDP)
  ASOC_PAYLOAD_HEX  the tensor to send, hex; empty means an empty tensor
  ASOC_WIRE         v1 or v2; this client speaks only v1 and exits 89 on v2

What it does, every case alike: connect, send HELLO, require a valid ACCEPT
as the first frame (else close at once), send the payload as one stream on
stream 1 (DATA frames with seq 0, 1, ... then END with seq = number of DATA
frames), then keep reading under the receiver rules of WIRE.md 4 until the
suite closes (a clean close) or a protocol error (closed at once).

Exit status: 0 success, 1 the handshake or the connection failed, 2 bad
environment, 89 a case this client does not support.
"""

import hashlib
import hmac
import os
import socket
import struct
import sys
import uuid

VERSION = 1
DATA, END, CONTROL, HELLO, ACCEPT = 1, 2, 3, 4, 5
HEADER = struct.Struct(">BBIII")  # version, type, stream_id, seq, length: 14 bytes

HANDSHAKE_TIMEOUT = 10.0  # WIRE.md 6 / RFC-0001 9.3: ACCEPT within 10 s of HELLO sent
LINGER = 30.0  # receive idle timeout on an open connection (WIRE.md 6)
MAX_PAYLOAD = 16 * 1024 * 1024  # WIRE.md 6: local maximum frame payload
CHUNK = 16 * 1024  # DATA payload size this client sends

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNSUPPORTED = 0, 1, 2, 89

# Cases whose behaviour this client does not offer. R1-6.3/5 needs a client
# that echoes what the server sends it; this one only reads.
UNSUPPORTED = {"R1-6.3/5"}


class ProtocolError(Exception):
    """The peer broke a rule; the connection is closed at once."""


class Closed(Exception):
    """The peer closed the connection."""


def mac(key, message, n):
    """The first n bytes of HMAC-SHA256(key, message) (WIRE.md conventions)."""
    return hmac.new(key, message, hashlib.sha256).digest()[:n]


def frame(ftype, stream, seq, payload=b""):
    return HEADER.pack(VERSION, ftype, stream, seq, len(payload)) + payload


def read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 65536))
        if not chunk:
            raise Closed("peer closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def handshake(sock, key):
    """Sends HELLO and verifies the ACCEPT (WIRE.md 3)."""
    node = uuid.uuid4().bytes
    challenge = os.urandom(4)  # 32 fresh random bits per HELLO, big-endian on the wire
    hello = node + mac(key, node + challenge, 16) + challenge
    sock.sendall(frame(HELLO, 0, 0, hello))
    sock.settimeout(HANDSHAKE_TIMEOUT)
    try:
        version, ftype, stream, seq, length = HEADER.unpack(read_exact(sock, HEADER.size))
        if (version, ftype, stream, seq, length) != (VERSION, ACCEPT, 0, 0, 16):
            raise ProtocolError(
                "first frame is not an ACCEPT: version %d type %d stream %d seq %d length %d"
                % (version, ftype, stream, seq, length)
            )
        body = read_exact(sock, 16)
    except socket.timeout:
        raise ProtocolError("no ACCEPT within %.0f s" % HANDSHAKE_TIMEOUT)
    token, token_mac = body[:8], body[8:]
    if not hmac.compare_digest(mac(key, token, 8), token_mac):
        raise ProtocolError("ACCEPT token MAC does not verify")


def send_stream(sock, stream, payload):
    """One stream: DATA frames with seq 0, 1, ... then END (WIRE.md 4)."""
    seq = 0
    for i in range(0, len(payload), CHUNK):
        sock.sendall(frame(DATA, stream, seq, payload[i : i + CHUNK]))
        seq += 1
    sock.sendall(frame(END, stream, seq))


def receive_until_closed(sock):
    """Reads frames under the receiver rules of WIRE.md 4 until the peer
    closes; raises ProtocolError on a broken rule."""
    sock.settimeout(LINGER)
    expected = {}  # stream id -> next seq
    while True:
        try:
            head = sock.recv(HEADER.size, socket.MSG_PEEK)
            if not head:
                return
            version, ftype, stream, seq, length = HEADER.unpack(read_exact(sock, HEADER.size))
        except socket.timeout:
            return
        if version != VERSION:
            raise ProtocolError("version %d" % version)
        if ftype in (HELLO, ACCEPT):
            raise ProtocolError("handshake frame type %d after the handshake" % ftype)
        if length > MAX_PAYLOAD:
            raise ProtocolError("payload of %d bytes over the maximum" % length)
        if ftype in (DATA, END):
            if stream == 0:
                raise ProtocolError("type %d on stream 0" % ftype)
            if seq != expected.get(stream, 0):
                raise ProtocolError("stream %d: seq %d, expected %d" % (stream, seq, expected.get(stream, 0)))
            if ftype == END and length != 0:
                raise ProtocolError("END with length %d" % length)
        read_exact(sock, length)  # DATA bodies, and CONTROL / unknown types skipped whole
        if ftype == DATA:
            expected[stream] = seq + 1
        elif ftype == END:
            expected.pop(stream, None)  # the id is free again


def main():
    env = os.environ
    try:
        case = env["ASOC_TESTCASE"]
        host, port = env["ASOC_HOST"], int(env["ASOC_PORT"])
        key = env["ASOC_API_KEY"].encode("utf-8")
        payload = bytes.fromhex(env.get("ASOC_PAYLOAD_HEX", ""))
    except (KeyError, ValueError) as e:
        print("asoc_client.py: bad environment: %r" % (e,), file=sys.stderr)
        return EXIT_USAGE
    if case in UNSUPPORTED:
        return EXIT_UNSUPPORTED
    # A v1 client only: the suite's v2 cases (--wire v2) are not for it.
    if env.get("ASOC_WIRE", "v1") != "v1":
        print("asoc_client.py: speaks only v1 (run the suite with --wire v1)", file=sys.stderr)
        return EXIT_UNSUPPORTED
    try:
        sock = socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT)
    except OSError as e:
        print("asoc_client.py: connect %s:%d: %s" % (host, port, e), file=sys.stderr)
        return EXIT_FAILED
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        handshake(sock, key)
        send_stream(sock, 1, payload)
        receive_until_closed(sock)
        return EXIT_OK
    except (ProtocolError, Closed, OSError) as e:
        print("asoc_client.py [%s]: %s" % (case, e), file=sys.stderr)
        return EXIT_FAILED
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
