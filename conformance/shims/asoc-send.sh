#!/bin/sh
# Runs `asoc send` as the client of the conformance suite's client mode:
#
#   asoc conformance client --exec "sh conformance/shims/asoc-send.sh"
#
# ASOC_BIN names the asoc binary (default: `asoc` on PATH), ASOC_RUNTIME
# its runtime (default tokio) and ASOC_WIRE the version it dials (default
# v1, the version of the suite's R1/R2 cases). The suite provides ASOC_TESTCASE, ASOC_HOST,
# ASOC_PORT, ASOC_API_KEY and the payload in ASOC_PAYLOAD_FILE.
#
# `asoc send` is one-shot: it sends its stream and closes at once, and it
# never echoes. Cases that need the client to stay connected after its
# stream (to see what it does with a frame the suite sends next) or to
# echo are not something it offers: exit 89, "unsupported".
case "$ASOC_TESTCASE" in
  R1-6.3/5|R1-8.1/3|R1-8.1/4|R1-9.2/14|R1-9.2/15|R1-9.2/16|R1-10.4/8) exit 89 ;;
esac
exec "${ASOC_BIN:-asoc}" send --runtime "${ASOC_RUNTIME:-tokio}" \
  --wire "${ASOC_WIRE:-v1}" --peer "$ASOC_HOST:$ASOC_PORT" "$ASOC_PAYLOAD_FILE"
