#!/usr/bin/env bash
# Installs the clients that scripts/capture_heads.py drives (Debian 12, as root).
# Idempotent: re-running only installs what is missing.
#   scripts/capture_heads_install.sh && python3 scripts/capture_heads.py
set -euo pipefail

VENV=${HEADS_VENV:-/tmp/heads-venv}
NODE_DIR=${HEADS_NODE_DIR:-/tmp/heads-node}

SUDO=
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

APT_PKGS=(
  xvfb chromium firefox-esr            # browsers, run headful under Xvfb
  lynx w3m links2 elinks               # text browsers
  curl wget wget2 aria2 apache2-utils httpie   # command-line tools
  php-cli php-curl ruby libwww-perl perl golang-go   # language runtimes/libraries
  default-jdk-headless libokhttp-java  # java.net.http, HttpURLConnection, OkHttp 3
  nodejs npm python3 python3-venv
)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# java/node/npm may come from elsewhere (not from Debian); do not fight that.
filtered=()
for p in "${missing[@]}"; do
  case "$p" in
    default-jdk-headless) command -v java >/dev/null && command -v javac >/dev/null && continue ;;
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    python3|python3-venv) command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null && continue ;;
  esac
  filtered+=("$p")
done
if [ ${#filtered[@]} -gt 0 ]; then
  echo "apt: installing ${filtered[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${filtered[@]}" \
    fonts-dejavu-core xauth
else
  echo "apt: all present"
fi

# Python HTTP libraries, in a venv of their own.
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
if ! "$VENV/bin/python" -c 'import requests, httpx, aiohttp' 2>/dev/null; then
  "$VENV/bin/pip" install -q requests httpx aiohttp
else
  echo "pip: requests httpx aiohttp present in $VENV"
fi

# Node HTTP libraries, in a directory of their own.
mkdir -p "$NODE_DIR"
if [ ! -f "$NODE_DIR/package.json" ]; then
  (cd "$NODE_DIR" && npm init -y >/dev/null)
fi
if ! (cd "$NODE_DIR" && node -e 'require.resolve("axios");require.resolve("node-fetch");require.resolve("got/package.json")' 2>/dev/null); then
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --silent axios got node-fetch@2)
else
  echo "npm: axios got node-fetch present in $NODE_DIR"
fi
echo "capture_heads_install: done"
