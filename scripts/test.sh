#!/usr/bin/env bash
# Runs every test of every module in the workspace: formatting, vet, unit
# tests, fuzz seed corpora, and the end-to-end tests on a real FUSE mount
# (those need root and /dev/fuse; without them they skip and say why).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then
	echo "gofmt would change: $bad" >&2
	exit 1
fi

modules=$(go list -f '{{.Dir}}' -m)
echo "== go vet"
for m in $modules; do (cd "$m" && go vet ./...); done

echo "== go test"
status=0
for m in $modules; do
	(cd "$m" && go test -count=1 -timeout 40m ./...) || status=1
done
exit $status
