#!/bin/sh
# Runs `asoc send` as the client of the conformance suite's client mode:
#
#   asoc conformance client --exec "sh conformance/shims/asoc-send.sh"
#
# ASOC_BIN names the asoc binary (default: `asoc` on PATH) and ASOC_RUNTIME
# its runtime (default tokio). The suite provides ASOC_TESTCASE, ASOC_HOST,
# ASOC_PORT, ASOC_API_KEY, the payload in ASOC_PAYLOAD_FILE, the wire
# version under test in ASOC_WIRE (v1 or v2) and, when the server must
# prove a node id, ASOC_PEER_ID.
#
# `asoc send` is one-shot: it sends its stream and closes at once, and it
# never echoes. Cases that need the client to stay connected after its
# stream (to see what it does with a frame the suite sends next) or to
# echo are not something it offers: exit 89, "unsupported".
case "$ASOC_TESTCASE" in
  R1-6.3/5|R1-8.1/3|R1-8.1/4|R1-9.2/14|R1-9.2/15|R1-9.2/16|R1-10.4/8) exit 89 ;;
  R3-4/15|R3-4/16|R3-4/17) exit 89 ;;
esac
set -- --wire "${ASOC_WIRE:-v2}"
if [ -n "$ASOC_PEER_ID" ]; then
  set -- "$@" --peer-id "$ASOC_PEER_ID"
fi
exec "${ASOC_BIN:-asoc}" send --runtime "${ASOC_RUNTIME:-tokio}" "$@" \
  --peer "$ASOC_HOST:$ASOC_PORT" "$ASOC_PAYLOAD_FILE"
