#!/usr/bin/env bash
# System packages the tests need: Debian's Chromium for the end-to-end browser test. Playwright's own browser download does not
# work here, so the test points Playwright at /usr/bin/chromium. Skipped when it is already there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
