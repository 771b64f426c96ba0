#!/usr/bin/env bash
# The README's test command: installs what the tests need where it is missing (cargo-nextest;
# Debian's redis-server, which the Redis tests start on sockets of their own), then runs every
# test and the doc tests. Arguments go to `cargo nextest run` (CI passes `--profile ci`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is missing: installing Debian's package for the Redis tests"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server
fi
redis-server --version

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

cargo nextest run --workspace "$@"
cargo test --doc --workspace
