#!/usr/bin/env bash
# Tests the Wireshark dissector (trunkd.lua) with tshark against protocol/vectors/:
# installs tshark from Debian's packages if it is missing, then runs test.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v tshark >/dev/null; then
  echo "installing tshark"
  # wireshark-common asks whether non-root users may capture; answer no beforehand so
  # the install never waits for a terminal.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null
fi

python3 tools/wireshark/test.py "$@"
