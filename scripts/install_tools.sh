#!/usr/bin/env bash
# Installs the third-party tools the test suite runs for real (Prometheus and promtool, protoc with the Go plugins,
# Go, the PostgreSQL server, Chromium and its chromedriver for the Studio browser tests, nginx for the gateway tests).
# Debian packages; needs root (CI and the dev machines run as root). Skips what is already there, and only warns when
# it cannot install: the tests that need a missing tool skip with a reason naming it.
#
# `scripts/install_tools.sh nginx` installs only nginx (tests/gateway.py runs that when nginx is missing).
set -uo pipefail

want=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || want+=(nginx)
if [ "${1:-}" != nginx ]; then
  command -v prometheus >/dev/null 2>&1 || want+=(prometheus)
  command -v promtool >/dev/null 2>&1 || want+=(prometheus)
  command -v protoc >/dev/null 2>&1 || want+=(protobuf-compiler)
  command -v go >/dev/null 2>&1 || want+=(golang-go)
  command -v protoc-gen-go >/dev/null 2>&1 || want+=(protoc-gen-go golang-google-protobuf-dev)
  command -v protoc-gen-go-grpc >/dev/null 2>&1 || want+=(protoc-gen-go-grpc golang-google-grpc-dev)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null 2>&1 || want+=(postgresql)
  # Debian's Chromium and its matching driver: Selenium is pointed at these two binaries, so it never downloads a browser.
  command -v chromium >/dev/null 2>&1 || want+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || want+=(chromium-driver)
fi

if [ ${#want[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_tools: cannot install ${want[*]} (needs root and apt-get); tests that use them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
# shellcheck disable=SC2046
apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${want[@]}" | sort -u) >/dev/null 2>&1 \
  || echo "install_tools: apt-get could not install ${want[*]}; tests that use them will skip" >&2
# nginx's Debian package starts a system server on port 80; the tests run their own (tests/gateway.py). Stopped
# through its own pid file, never by name: a test's nginx may be running.
if printf '%s\n' "${want[@]}" | grep -qx nginx; then
  command -v systemctl >/dev/null 2>&1 && systemctl stop nginx >/dev/null 2>&1
  [ -s /run/nginx.pid ] && /usr/sbin/nginx -s quit >/dev/null 2>&1
  [ "${1:-}" = nginx ] && exit 0
fi
# Prometheus' Debian package starts a system service; the tests run their own instance.
command -v systemctl >/dev/null 2>&1 && systemctl stop prometheus >/dev/null 2>&1
pkill -x prometheus >/dev/null 2>&1 || true
# So does PostgreSQL's (a cluster under /var/lib/postgresql); the tests initdb and run their own servers.
if command -v pg_lsclusters >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _; do
    pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
  done
fi
command -v systemctl >/dev/null 2>&1 && systemctl stop postgresql >/dev/null 2>&1
command -v service >/dev/null 2>&1 && service postgresql stop >/dev/null 2>&1
exit 0
