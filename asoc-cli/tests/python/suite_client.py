#!/usr/bin/env python3
"""The real Python ASoc implementation as the client of `asoc conformance client`.

The suite runs this once per dial (`--exec "python3 suite_client.py"`) with
ASOC_TESTCASE, ASOC_HOST, ASOC_PORT, ASOC_API_KEY, ASOC_PAYLOAD_HEX and
ASOC_WIRE; ASOC_PYTHON_DIR names the implementation's directory
(shared/peers/asoc-python, imported unmodified).

It runs the implementation as it comes: a `NodeReady` with the suite's
address as its one static peer, discovery off, listening on 127.0.0.1 (an
ephemeral port). Its own static connector dials the suite; once that first
dial has finished, the payload is sent with `stream_tensor` (1 MiB chunks,
stream id 1) on the connection the dial made, and the program waits until
that connection closes (the suite closes it, or the implementation's 30 s
receive timeout does).

Exit status: 0 the dial was accepted and the tensor sent; 1 the dial did not
establish a connection (the implementation closes silently on a bad ACCEPT,
so this is how the suite sees a refused server), or sending failed; 2 a bad
environment; 89 for v2, which the implementation does not speak.
"""

import asyncio
import os
import sys
import uuid

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNSUPPORTED = 0, 1, 2, 89

# The implementation's own bounds: 5 s to connect plus 10 s for ACCEPT.
DIAL_BOUND = 20.0
# Its receive timeout is 30 s; the suite closes earlier in every case.
CLOSE_BOUND = 45.0


async def run(env):
    sys.path.insert(0, env["ASOC_PYTHON_DIR"])
    from asoc.node_ready import NodeReady

    host, port = env["ASOC_HOST"], int(env["ASOC_PORT"])
    key = ("temp_%s:%d" % (host, port)).encode()
    first_dial = asyncio.Event()
    original = NodeReady._connect_peer

    async def connect_peer(self, h, p):
        try:
            await original(self, h, p)
        finally:
            first_dial.set()

    NodeReady._connect_peer = connect_peer
    node = NodeReady(
        community=env.get("ASOC_COMMUNITY") or "asoc-conformance",
        api_key=env["ASOC_API_KEY"],
        static_peers=["%s:%d" % (host, port)],
        enable_discovery=False,
        host="127.0.0.1",
        port=0,
    )
    await node.start()
    try:
        await asyncio.wait_for(first_dial.wait(), DIAL_BOUND)
    except asyncio.TimeoutError:
        return EXIT_FAILED
    if key not in node.peers:
        return EXIT_FAILED
    payload = bytes.fromhex(env.get("ASOC_PAYLOAD_HEX", ""))
    try:
        await node.stream_tensor(str(uuid.uuid4()), payload)
    except Exception as e:
        print("suite_client.py: sending failed: %s" % (e or repr(e)), file=sys.stderr)
        return EXIT_FAILED
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_BOUND
    while key in node.peers and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return EXIT_OK


def main():
    env = os.environ
    if env.get("ASOC_WIRE", "v1") != "v1":
        os._exit(EXIT_UNSUPPORTED)
    try:
        env["ASOC_HOST"], int(env["ASOC_PORT"]), env["ASOC_API_KEY"], env["ASOC_PYTHON_DIR"]
    except (KeyError, ValueError) as e:
        print("suite_client.py: bad environment: %s" % e, file=sys.stderr)
        os._exit(EXIT_USAGE)
    rc = asyncio.run(run(env))
    sys.stdout.flush()
    sys.stderr.flush()
    # The implementation's static connector never ends by itself.
    os._exit(rc)


if __name__ == "__main__":
    main()
