#!/usr/bin/env bash
# Builds the pinned upstream binaries into a versioned cache directory outside the repository:
# the control plane (Kubernetes, etcd, kwok, helm) from the wrapper modules in tools/, and the
# real-node parts (kubelet, kube-proxy, containerd, CoreDNS, pause, the loopback registry,
# BuildKit) from their own Go modules or wrappers, and promtool for the alert rules' tests.
# Does nothing when they exist.
# Prints the directory on stdout; progress goes to stderr.
set -euo pipefail

# The body is a function called on the last line, so editing this file mid-run cannot break a build.
main() {

  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  k8s_version=v1.37.2
  helm_version=v3.22.0
  # Real-node parts, each built with its own module as the main module, so they get exactly the
  # dependency versions upstream tested (BuildKit cannot be `go install`ed: its go.mod excludes).
  containerd_version=v2.4.2
  registry_version=v3.1.2
  buildkit_version=v0.34.2
  # The cache key covers every pinned version: any change to a wrapper module's requirements or
  # source, or to the build recipe revision below, gives a new directory.
  recipe_revision=4
  key=$( (cat "$root"/tools/*/go.mod "$root"/tools/*/*.go; echo "$recipe_revision $containerd_version"
    echo "$registry_version $buildkit_version") | sha256sum | cut -c1-12)
  bin_dir=${HDA_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hda/bin/k8s-$k8s_version-$key}
  binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm
    kubelet kube-proxy containerd containerd-shim-runc-v2 ctr coredns pause registry
    buildkitd buildctl promtool)

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

  step "kubelet, kube-proxy $k8s_version"
  (cd "$root/tools/k8s" && go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$ldflags" \
    -o "$bin_dir/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  step "pause"
  k8s_dir=$(cd "$root/tools/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  gcc -Os -Wall -static -DVERSION="$k8s_version" -o "$bin_dir/pause" "$k8s_dir/build/pause/linux/pause.c"

  # `go build` inside the downloaded module: its go.mod and go.sum decide every dependency.
  build_module() { # module version ldflags tags package...
    local module=$1 version=$2 flags=$3 tags=$4 dir
    shift 4
    dir=$(GOFLAGS= go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [ -n "$dir" ] || { step "cannot download $module@$version"; return 1; }
    (cd "$dir" && GOFLAGS=-mod=readonly go build -trimpath -tags "$tags" -ldflags "-s -w $flags" \
      -o "$bin_dir/" "$@")
  }
  step "containerd $containerd_version"
  build_module github.com/containerd/containerd/v2 "$containerd_version" \
    "-X github.com/containerd/containerd/v2/version.Version=$containerd_version" \
    "no_btrfs no_devmapper no_zfs" ./cmd/containerd ./cmd/containerd-shim-runc-v2 ./cmd/ctr
  step "coredns"
  # A wrapper module (tools/coredns) linking only the plugins cluster DNS uses.
  (cd "$root/tools/coredns" && go build -trimpath -ldflags "-s -w" -o "$bin_dir/coredns" .)
  step "registry $registry_version"
  build_module github.com/distribution/distribution/v3 "$registry_version" \
    "-X github.com/distribution/distribution/v3/version.version=$registry_version" "" ./cmd/registry
  step "buildkit $buildkit_version"
  build_module github.com/moby/buildkit "$buildkit_version" \
    "-X github.com/moby/buildkit/version.Version=$buildkit_version" "" ./cmd/buildkitd ./cmd/buildctl

  step "promtool"
  # The chart's alert rules are checked with `promtool test rules` (tools/promtool).
  # remove_all_sd: no service-discovery plugins (cloud SDKs); rule tests do not need them.
  (cd "$root/tools/promtool" && go build -trimpath -tags remove_all_sd -ldflags "-s -w" \
    -o "$bin_dir/promtool" github.com/prometheus/prometheus/cmd/promtool)

  have_all || { step "missing binaries in $bin_dir"; exit 1; }
  step "built in $(( $(date +%s) - start ))s into $bin_dir"
  echo "$bin_dir"
}

main "$@"
