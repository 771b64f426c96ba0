#!/usr/bin/env bash
# The README's test command: installs what the tests need where it is missing (cargo-nextest;
# Debian's redis-server and openssl, which the Redis tests use), then runs every
# test, the integration tests again under the spawn start method, and the doc tests.
# Arguments go to `cargo nextest run` (CI passes `--profile ci`).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Redis tests start their own redis-server; the TLS one makes its certificates with
# openssl.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "missing: ${missing[*]}: installing Debian's packages for the Redis tests"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
redis-server --version
openssl version

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

cargo nextest run --workspace "$@"
# Every test of tests-integration (the crash matrix, the Redis hosts) again under the start
# method that is not the default, so that both are tested.
PROCPOOL_START_METHOD=spawn cargo nextest run -p tests-integration "$@"
cargo test --doc --workspace
