#!/usr/bin/env bash
# Builds the CNCF distribution registry (github.com/distribution/distribution/v3/cmd/registry, the
# version pinned in go.mod) and a small htpasswd writer into $1 (a folder named by the version, so a
# cached build is reused until go.mod changes the version).
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
cd "$(dirname "$0")"
version=$(awk '$1 == "github.com/distribution/distribution/v3" {print $2}' go.mod)
ldflags="-s -w -X github.com/distribution/distribution/v3/version.version=$version"
mkdir -p "$out.tmp"
for cmd in github.com/distribution/distribution/v3/cmd/registry ./cmd/htpasswd; do
  echo "building $cmd ($version)"
  go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "$cmd"
done
rm -rf "$out" && mv "$out.tmp" "$out"
"$out/registry" --version
