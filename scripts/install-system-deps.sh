#!/usr/bin/env bash
# System packages the tests need, each checked on its own and installed only when missing:
# - chromium, chromium-driver: the end-to-end browser test (Playwright's own browser download does not
#   work here, so the test points Playwright at /usr/bin/chromium);
# - postgresql: the server binaries (initdb, pg_ctl) for the knowledge base's PostgreSQL test, which
#   starts a throwaway cluster in a temporary folder (the Debian service itself is not used).
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "Installing system packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
