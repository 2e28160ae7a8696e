#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd)
# from the Go modules pinned in go.mod into $1 (a folder named by the version, so a cached
# build is reused until go.mod changes the version).
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
cd "$(dirname "$0")"
version=$(awk '$1 == "k8s.io/kubernetes" {print $2}' go.mod)
major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}
# Without these, /version reports v0.0.0-master and helm's kubeVersion check fails.
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
mkdir -p "$out.tmp"
# One build at a time: linking kube-apiserver alone needs a few GB.
for cmd in k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
           k8s.io/kubernetes/cmd/kube-scheduler ./cmd/etcd; do
  echo "building $cmd ($version)"
  go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "$cmd"
done
rm -rf "$out" && mv "$out.tmp" "$out"
"$out/kube-apiserver" --version
