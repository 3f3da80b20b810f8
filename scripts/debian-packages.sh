#!/usr/bin/env bash
# Installs, with apt, the Debian packages the build and the test command need when any is missing
# (as root; otherwise names them and fails). Used by scripts/test.sh and scripts/fuzz.sh.
#
# librdkafka is built from its bundled source: a C/C++ toolchain, make and pkg-config, zlib,
# OpenSSL, Cyrus SASL and zstd (TLS, SASL and zstd support); the API fuzzer
# (scripts/api-fuzz.sh) installs schemathesis in a temporary Python venv.
set -euo pipefail
needed=(build-essential pkg-config zlib1g-dev libssl-dev libsasl2-dev libzstd-dev python3-venv "$@")
missing=()
for package in "${needed[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -eq 0 ]]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
else
  echo "missing packages: ${missing[*]} (run as root, or install them with apt-get)" >&2
  exit 1
fi
