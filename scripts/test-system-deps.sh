#!/usr/bin/env bash
# System packages the tests need beyond Python: Debian's chromium + chromium-driver (web UI browser test) and a
# Java runtime (METEOR in pycocoevalcap runs a Java jar).
# Fast no-op when present; otherwise installs non-interactively (sudo only when not root). If it cannot
# install, it says so and exits 0: the browser test then skips with that reason instead of failing set-up.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
pkgs=()
have chromium && have chromedriver || pkgs+=(chromium chromium-driver)
have java || pkgs+=(default-jre-headless)
if [ ${#pkgs[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif have sudo && sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
  echo "test-system-deps: chromium missing and no root/sudo to install it; the web UI browser test will skip" >&2
  exit 0
fi
if ! have apt-get; then
  echo "test-system-deps: chromium missing and apt-get not available; the web UI browser test will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
install() { "${SUDO[@]}" apt-get install -y -q "${pkgs[@]}" >/dev/null; }
# a stale package index is the usual reason the first try fails
if ! install 2>/dev/null; then
  "${SUDO[@]}" apt-get update -q >/dev/null || true
  install || { echo "test-system-deps: could not install ${pkgs[*]}; the browser test / METEOR will skip" >&2; exit 0; }
fi
echo "test-system-deps: installed ${pkgs[*]}" >&2
