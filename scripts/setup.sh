#!/usr/bin/env bash
# Idempotent set-up: .venv with the package, the pipeline and test extras, their pinned dependencies, Fashion-MNIST offline when possible.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv"
    "$python" -m venv .venv
fi

stamp=.venv/.cht-installed
wanted=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "installing cht and its dependencies into .venv (first time: a few minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[pipeline,test]"
    echo "$wanted" > "$stamp"
fi

# Fashion-MNIST ships as a Debian package; install it when we can (root or sudo, apt present).
fashion=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$fashion" ] && command -v apt-get >/dev/null; then
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
    if [ "$sudo" != none ]; then
        echo "installing Debian package dataset-fashion-mnist"
        $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null \
            || echo "warning: could not install dataset-fashion-mnist; put the Fashion-MNIST files in data/ (see README)"
    else
        echo "note: run 'sudo apt-get install dataset-fashion-mnist' to make Fashion-MNIST available offline"
    fi
fi
