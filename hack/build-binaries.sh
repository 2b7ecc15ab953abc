#!/usr/bin/env bash
# Builds the pinned upstream binaries (Kubernetes, etcd, kwok, helm) from the wrapper modules in
# tools/ into a versioned cache directory outside the repository. Does nothing when they exist.
# Prints the directory on stdout; progress goes to stderr.
set -euo pipefail

# The body is a function called on the last line, so editing this file mid-run cannot break a build.
main() {

  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  k8s_version=v1.37.2
  helm_version=v3.22.0
  # The cache key covers every pinned version: any change to a wrapper module's requirements, or
  # to the build recipe revision below, gives a new directory.
  recipe_revision=1
  key=$( (cat "$root"/tools/*/go.mod; echo "$recipe_revision") | sha256sum | cut -c1-12)
  bin_dir=${HDA_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hda/bin/k8s-$k8s_version-$key}
  binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm)

  have_all() {
    local b
    for b in "${binaries[@]}"; do [ -x "$bin_dir/$b" ] || return 1; done
  }

  if have_all; then
    echo "binaries already built in $bin_dir" >&2
    echo "$bin_dir"
    exit 0
  fi

  mkdir -p "$bin_dir"
  start=$(date +%s)
  export CGO_ENABLED=0 GOFLAGS=-mod=mod

  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  minor=$(echo "$k8s_version" | cut -d. -f2)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X '$pkg.gitVersion=$k8s_version' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=$minor'"
    ldflags="$ldflags -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=$build_date'"
  done

  step() { echo "[build-binaries] $(date -u +%H:%M:%S) $*" >&2; }

  step "etcd"
  (cd "$root/tools/etcd" && go build -trimpath -o "$bin_dir/etcd" go.etcd.io/etcd/server/v3)
  step "kwok"
  (cd "$root/tools/kwok" && go build -trimpath -ldflags "-s -w" -o "$bin_dir/kwok" sigs.k8s.io/kwok/cmd/kwok)
  step "helm"
  (cd "$root/tools/helm" && go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" \
    -o "$bin_dir/helm" helm.sh/helm/v3/cmd/helm)
  step "kubernetes $k8s_version"
  (cd "$root/tools/k8s" && go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$ldflags" \
    -o "$bin_dir/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)

  have_all || { step "missing binaries in $bin_dir"; exit 1; }
  step "built in $(( $(date +%s) - start ))s into $bin_dir"
  echo "$bin_dir"
}

main "$@"
