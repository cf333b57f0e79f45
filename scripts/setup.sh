#!/usr/bin/env bash
# Installs the system packages Stria's mount and tests need (Debian).
# Idempotent: does nothing when everything is already there.
set -euo pipefail

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v getfattr >/dev/null 2>&1 || need+=(attr)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: need root to install ${need[*]}" >&2
		exit 1
	fi
	echo "setup: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v go >/dev/null 2>&1; then
	echo "setup: Go is required (https://go.dev/doc/install); /usr/local/go/bin must be on PATH" >&2
	exit 1
fi
