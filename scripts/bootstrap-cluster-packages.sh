#!/usr/bin/env bash
# Installs the Debian packages `make cluster` runs on (scripts/iot_tools/cluster): containerd
# and runc (the container runtime), containernetworking-plugins (bridge and host-local CNI in
# /usr/lib/cni), iptables (kube-proxy, kubelet, the cluster's guards), iproute2 (the pod
# bridge, the service-range route), mount (util-linux: umount at teardown), openssl (the
# service-account key), mmdebstrap (root filesystems of the images iot_tools.images builds)
# and gcc/libc6-dev (the static pause binary). Idempotent: installs only what is missing.
# Needs root the first time (apt-get).
set -euo pipefail

# package -> a file it installs (present = installed)
declare -A provides=(
  [containerd]=/usr/bin/containerd
  [runc]=/usr/sbin/runc
  [containernetworking-plugins]=/usr/lib/cni/bridge
  [iptables]=/usr/sbin/iptables
  [iproute2]=/usr/sbin/ip
  [mount]=/usr/bin/umount
  [openssl]=/usr/bin/openssl
  [mmdebstrap]=/usr/bin/mmdebstrap
  [gcc]=/usr/bin/gcc
  [libc6-dev]=/usr/lib/x86_64-linux-gnu/libc.a
)
missing=()
for package in "${!provides[@]}"; do
  [[ -e "${provides[$package]}" ]] || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "bootstrap-cluster-packages: missing ${missing[*]}; the cluster needs root anyway:" \
       "run as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "bootstrap-cluster-packages: installing ${missing[*]} (once)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# mmdebstrap with its recommends (gpg, arch-test, libdpkg-perl, mount, …), as it was tested
# here; the rest without.
lean=()
for package in "${missing[@]}"; do
  [[ "$package" == mmdebstrap ]] || lean+=("$package")
done
if [[ ${#lean[@]} -gt 0 ]]; then
  apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
fi
if [[ " ${missing[*]} " == *" mmdebstrap "* ]]; then
  apt-get install -y -qq mmdebstrap >/dev/null
fi
for package in "${missing[@]}"; do
  if [[ ! -e "${provides[$package]}" ]]; then
    echo "bootstrap-cluster-packages: $package installed but ${provides[$package]} is missing" >&2
    exit 1
  fi
done
