#!/usr/bin/env bash
# Stria against a go-fuse loopback mount of the same disk, in one run:
# MB/s for 1 MiB sequential write and read of a 1 GiB file (stripe count 1
# and 4), and creates/s, stats/s, unlinks/s for 10,000 files.
# Needs root and /dev/fuse. Usage: scripts/bench.sh [-benchtime 1x] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
dir=${1:-/var/tmp/stria-bench}
mkdir -p "$dir"
cd tests
STRIA_BENCH_DIR="$dir" go test -run '^$' -bench 'BenchmarkVsLoopback' -benchtime 1x -timeout 60m .
