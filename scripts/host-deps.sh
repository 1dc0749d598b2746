#!/bin/sh
# Install the Debian packages pycrio builds and runs with (as root; idempotent, quick when done).
set -eu

PACKAGES="make gcc libc6-dev pkg-config python3 python3-venv python3-dev libffi-dev zlib1g-dev
libzstd-dev libisal-dev libssl-dev runc iproute2 util-linux procps file clang-format ca-certificates
docker-registry busybox-static nftables conntrack containernetworking-plugins zstd clang libclang-rt-14-dev strace"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "host-deps: missing Debian packages:$missing (run as root to install them)" >&2
    exit 1
fi
echo "host-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
