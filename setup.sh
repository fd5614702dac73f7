#!/usr/bin/env bash
# Set up derive on a fresh Debian machine: TeX Live (for the lecture PDFs), a C compiler
# (for `derive compile`) and the Python package with its test extra, into whatever Python
# environment is active.
set -euo pipefail
cd "$(dirname "$0")"

DEBIAN_PACKAGES="texlive-latex-base texlive-latex-recommended texlive-latex-extra \
texlive-pictures texlive-lang-portuguese latexmk poppler-utils"
# `derive compile` builds the ahead-of-time compiled kernels as a C extension: it needs a C
# compiler and this Python's headers (Debian's python3-dev, for Debian's own Python).
command -v gcc >/dev/null || DEBIAN_PACKAGES="$DEBIAN_PACKAGES gcc libc6-dev"
HEADERS=$(python -c 'import os, sysconfig; print(os.path.isfile(os.path.join(
    sysconfig.get_paths()["include"], "Python.h")))')
[ "$HEADERS" = True ] || DEBIAN_PACKAGES="$DEBIAN_PACKAGES python3-dev"

if ! command -v pdflatex >/dev/null || ! command -v pdftotext >/dev/null \
    || ! command -v gcc >/dev/null || [ "$HEADERS" != True ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $DEBIAN_PACKAGES >/dev/null
  else
    echo "setup.sh: no apt-get; install pdflatex (lecture PDFs) and gcc (derive compile) yourself." >&2
  fi
fi

python -m pip install -q --upgrade pip
# torch is pinned to the CPU wheel (see pyproject.toml); it is a test extra only.
python -m pip install -q -e ".[test]"
