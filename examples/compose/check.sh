#!/usr/bin/env bash
# Checks docker-compose.yml without a Docker engine: Compose itself parses and validates it
# (`docker-compose config`, the Python Compose from PyPI, installed once into .tools/), then
# check.py verifies that it references only what exists: the Dockerfile and its targets, the
# files the Dockerfile copies, fixed addresses inside the network, one Consul address for all,
# payment reports sent to the gateway.
#
#   bash examples/compose/check.sh        # or: just compose-check
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.tools/compose-venv
if [ ! -x "$venv/bin/docker-compose" ]; then
    echo "installing docker-compose 1.29.2 (Python, from PyPI) into $venv" >&2
    python3 -m venv "$venv" || {
        echo "python3 -m venv failed: install Python 3 with venv (Debian: apt install python3-venv)" >&2
        exit 1
    }
    # Compose 1.29.2 pins PyYAML < 6, which no longer builds on current Python; it runs fine on
    # PyYAML 6, so install it without its pins and give it the rest by hand.
    "$venv/bin/pip" install -q --no-deps docker-compose==1.29.2
    "$venv/bin/pip" install -q --no-warn-conflicts "pyyaml>=6,<7" "jsonschema>=2.5.1,<4" "docopt>=0.6.1,<1" \
        "dockerpty>=0.4.1,<1" "texttable>=0.9.0,<2" "python-dotenv>=0.13.0,<1" \
        "requests>=2.20.0,<3" "websocket-client>=0.32.0,<1" "docker>=5.0.0,<7" "distro>=1.5.0,<2"
fi
export SHOP_ADMIN_PASSWORD=compose-check
export SHOP_PAYMENTS_WEBHOOK_SECRET=compose-check-webhook-secret-0123456789
"$venv/bin/docker-compose" -f docker-compose.yml config -q
"$venv/bin/python" examples/compose/check.py docker-compose.yml
