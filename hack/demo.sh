#!/usr/bin/env bash
# `make demo`: a local Kubernetes cluster running examples/hda.yaml, with events flowing through.
#
# Where the host allows it (root, see `hda cluster check`), the cluster has real nodes (kubelet,
# containerd, runc) and the demo does what the README says: builds the images here (no Docker),
# `helm install`s the operator, applies examples/hda.yaml, sends events through the ingest
# Service and shows them landing on the FC volumes through a live tail. Elsewhere it falls back to
# kwok nodes (pods are simulated, containers never run) with the operator as a local process, and
# says why. HDA_DEMO_NODES=kwok forces the fallback.
#
# Storage: examples/hda.yaml keeps the defaults, so its Valkey claim wants the cluster's default
# StorageClass and its two output claims want static Fibre Channel volumes of class
# hda-fibre-channel. Real nodes come with both (FC stand-ins are loop devices the kubelet really
# mounts); on kwok the demo makes a hostPath volume and two FC PersistentVolumes with fake WWIDs.
#
# Environment: HDA_DEMO_CLUSTER (default demo), HDA_DEMO_NAMESPACE (default hda-demo),
# HDA_DEMO_TIMEOUT seconds to wait for Ready (default 300), HDA_DEMO_EVENTS (default 20000).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
hda=${HDA:-$root/.venv/bin/hda}
cluster=${HDA_DEMO_CLUSTER:-demo}
namespace=${HDA_DEMO_NAMESPACE:-hda-demo}
timeout=${HDA_DEMO_TIMEOUT:-300}
example=$root/examples/hda.yaml
crd=$root/crds/hyperdriveaccelerators.hda.shitops.dev.yaml

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [ "${1:-}" = down ]; then # `make demo-down`: stop the operator, then the cluster
  if env_line=$("$hda" cluster env --name "$cluster" 2>/dev/null); then
    eval "$env_line"
    pid_file=$(dirname "$KUBECONFIG")/operator.pid
    if [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null; then echo "operator stopped"; fi
  fi
  exec "$hda" cluster down --name "$cluster"
fi

say "binaries (built once into ~/.cache/hda/bin)"
bin_dir=$(bash "$root/hack/build-binaries.sh")
kubectl="$bin_dir/kubectl"

mode=real
if [ "${HDA_DEMO_NODES:-real}" = kwok ]; then
  mode=kwok; reason="HDA_DEMO_NODES=kwok"
elif ! reason=$("$hda" cluster check 2>&1); then
  mode=kwok
fi

if [ "$mode" = real ]; then
  k() { "$kubectl" "$@"; }
  events=${HDA_DEMO_EVENTS:-20000}
  say "local cluster '$cluster' with real nodes (one of them Fibre Channel labelled)"
  eval "$("$hda" cluster up --name "$cluster" --nodes 0 --real-nodes 2 --real-fc-nodes 1)"
  k get nodes -L hda.shitops.dev/fibre-channel -o wide

  say "images: the Dockerfile built with BuildKit, pushed to the cluster's loopback registry"
  "$hda" cluster images --name "$cluster"

  say "operator: helm install, as the README says"
  "$bin_dir/helm" upgrade --install hda-operator "$root/charts/hda-operator" \
    --namespace hda-system --create-namespace
  k -n hda-system rollout status deployment/hda-operator --timeout="${timeout}s"

  say "namespace $namespace and $example"
  k create namespace "$namespace" --dry-run=client -o yaml | k apply -f -
  k apply -n "$namespace" -f "$example"
  name=$(k create --dry-run=client -o jsonpath='{.metadata.name}' -f "$example")
  for _ in $(seq "$timeout"); do # `kubectl wait` fails at once while there are no conditions
    [ -n "$(k -n "$namespace" get "hda/$name" -o jsonpath='{.status.conditions}' 2>/dev/null)" ] && break
    sleep 1
  done
  k -n "$namespace" wait --for=condition=Ready "hda/$name" --timeout="${timeout}s"
  k -n "$namespace" get hda,pods -o wide

  work=$(mktemp -d)
  forwards=()
  cleanup() { kill "${forwards[@]}" 2>/dev/null || true; rm -rf "$work"; }
  trap cleanup EXIT
  forward() { # forward LOG TARGET PORT: starts kubectl port-forward, prints the local port
    k -n "$namespace" port-forward "$2" ":$3" >"$work/$1.forward" 2>&1 &
    forwards+=($!)
    for _ in $(seq 60); do
      local_port=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$work/$1.forward" | head -n1)
      if [ -n "$local_port" ]; then echo "$local_port"; return 0; fi
      sleep 0.5
    done
    cat "$work/$1.forward" >&2
    return 1
  }

  say "live tail of the whole stream through the subscribe Service (status.endpoints.subscribe)"
  subscribe_port=$(forward subscribe "svc/$name-output" 8081)
  "$hda" tail "ws://127.0.0.1:$subscribe_port/v1/streams/events/subscribe" --from '$' --brief \
    --idle-timeout 15 2>"$work/stream.count" &
  tail_pid=$!

  say "sending $events events through the ingest Service"
  ingest_port=$(forward ingest "svc/$name-ingest" 8080)
  "$hda" load "http://127.0.0.1:$ingest_port" --events "$events" --batch 200 --rate 2000 \
    --producer demo
  wait "$tail_pid" 2>/dev/null || true
  echo "whole stream through the Service: $(cat "$work/stream.count")"
  say "durable on the FC volumes, per output pod (each pod's own records: scope=local)"
  for pod in $(k -n "$namespace" get pods -l app.kubernetes.io/component=output -o name); do
    pod_name=${pod#pod/}
    port=$(forward "$pod_name" "$pod" 8081)
    "$hda" tail "ws://127.0.0.1:$port/v1/streams/events/subscribe?scope=local" --from 0 \
      --idle-timeout 3 >/dev/null 2>"$work/$pod_name.count"
    echo "$pod_name: $(cat "$work/$pod_name.count")"
  done
  k -n "$namespace" get hda "$name" -o wide

  cat <<EOF

The pipeline is running on real nodes. Try:
  export KUBECONFIG=$KUBECONFIG
  $kubectl -n $namespace get pods -o wide
  $kubectl -n $namespace scale hda/$name --replicas=3      # workers follow
  $kubectl -n $namespace delete pod -l app.kubernetes.io/component=workers  # replaced, nothing lost
  $kubectl -n $namespace logs -l app.kubernetes.io/component=output --tail=5
Stop everything (processes, bridges, mounts, loop devices): make demo-down
EOF
  exit 0
fi

say "kwok nodes instead of real ones, because: $reason"

say "local cluster '$cluster'"
eval "$("$hda" cluster up --name "$cluster" --nodes 3 --fc-nodes 2)"
state_dir=$(dirname "$KUBECONFIG")
log=$state_dir/operator.log
pid_file=$state_dir/operator.pid
k() { "$kubectl" "$@"; }

say "CRD"
k apply --server-side --force-conflicts -f "$crd"
# Poll: `kubectl wait --for=condition` fails at once while .status.conditions is still absent.
wait_condition() { # wait_condition SECONDS RESOURCE CONDITION [kubectl args...]
  local seconds=$1 resource=$2 condition=$3
  shift 3
  for _ in $(seq "$seconds"); do
    status=$(k get "$resource" "$@" -o jsonpath="{.status.conditions[?(@.type==\"$condition\")].status}" 2>/dev/null || true)
    [ "$status" = True ] && return 0
    sleep 1
  done
  return 1
}
wait_condition 60 crd/hyperdriveaccelerators.hda.shitops.dev Established

say "storage: FC StorageClass, a default class for Valkey, and the demo's static volumes"
k apply --server-side -f - <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: hda-fibre-channel
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: hda-demo-local
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: hda-demo-valkey-0
  labels: {hda-demo: "true"}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: hda-demo-local
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: /var/lib/hda-demo/valkey-0}
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: hda-demo-fc-0
  labels: {hda-demo: "true"}
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: hda-fibre-channel
  persistentVolumeReclaimPolicy: Retain
  fc: {wwids: ["3600a0b80000demo0000000000000000"], fsType: ext4}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: hda.shitops.dev/fibre-channel, operator: In, values: ["true"]}
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: hda-demo-fc-1
  labels: {hda-demo: "true"}
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: hda-fibre-channel
  persistentVolumeReclaimPolicy: Retain
  fc: {wwids: ["3600a0b80000demo0000000000000001"], fsType: ext4}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: hda.shitops.dev/fibre-channel, operator: In, values: ["true"]}
EOF

say "operator (log: $log)"
if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  echo "already running (pid $(cat "$pid_file"))"
else
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  HDA_LOG_FORMAT=json nohup "$hda" operator --all-namespaces \
    --liveness "http://127.0.0.1:$port/healthz" >"$log" 2>&1 &
  echo $! >"$pid_file"
  for _ in $(seq 60); do
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
    kill -0 "$(cat "$pid_file")" 2>/dev/null || { tail -n 50 "$log"; exit 1; }
    sleep 1
  done
  echo "running (pid $(cat "$pid_file")), healthy on http://127.0.0.1:$port/healthz"
fi

say "namespace $namespace (restricted Pod Security) and $example"
k apply --server-side -f - <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/audit: restricted
EOF
k apply -n "$namespace" -f "$example"
name=$(k create --dry-run=client -o jsonpath='{.metadata.name}' -f "$example")

say "waiting for Ready (up to ${timeout}s)"
if ! wait_condition "$timeout" "hda/$name" Ready -n "$namespace"; then
  k get -n "$namespace" "hda/$name" -o yaml
  tail -n 40 "$log"
  exit 1
fi

say "kubectl get hda"
k get hda -n "$namespace" -o wide
say "children"
k get -n "$namespace" statefulsets,deployments,pods,services,configmaps,secrets,serviceaccounts,pdb,networkpolicies,pvc \
  -l "hda.shitops.dev/accelerator=$name"
k get pv
say "conditions"
k get -n "$namespace" "hda/$name" \
  -o jsonpath='{range .status.conditions[*]}{.type}{"\t"}{.status}{"\t"}{.reason}{"\t"}{.message}{"\n"}{end}'

cat <<EOF

The demo is running. Try:
  export KUBECONFIG=$KUBECONFIG
  $kubectl -n $namespace scale hda/$name --replicas=5      # workers follow
  $kubectl -n $namespace delete deployment $name-workers   # restored within seconds
  $kubectl -n $namespace describe hda/$name                 # conditions and events
Stop the operator and the cluster: make demo-down
EOF
