#!/usr/bin/env bash
# Set up derive on a fresh Debian machine: TeX Live (for the lecture PDFs), a C compiler
# (for `derive compile`) and the Python package with its test extra, into whatever Python
# environment is active.
set -euo pipefail
cd "$(dirname "$0")"

# Every package is named: `--no-install-recommends` would otherwise drop lmodern (a mere
# recommendation of texlive-base), and every document loads lmodern.sty.
# tests/test_tex_packages.py checks that each package the templates load is found.
DEBIAN_PACKAGES="texlive-latex-base texlive-latex-recommended texlive-latex-extra \
texlive-pictures texlive-lang-portuguese lmodern latexmk poppler-utils"
# `derive compile` builds the ahead-of-time compiled kernels as a C extension: it needs a C
# compiler and this Python's headers (Debian's python3-dev, for Debian's own Python).
command -v gcc >/dev/null || DEBIAN_PACKAGES="$DEBIAN_PACKAGES gcc libc6-dev"
HEADERS=$(python -c 'import os, sysconfig; print(os.path.isfile(os.path.join(
    sysconfig.get_paths()["include"], "Python.h")))')
[ "$HEADERS" = True ] || DEBIAN_PACKAGES="$DEBIAN_PACKAGES python3-dev"

# Install only what is missing, judged package by package (not by whether pdflatex runs:
# a machine with pdflatex but without lmodern fails every document).
MISSING=""
if command -v dpkg-query >/dev/null; then
  for pkg in $DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || MISSING="$MISSING $pkg"
  done
fi
if [ -n "$MISSING" ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $MISSING >/dev/null
  fi
elif ! command -v dpkg-query >/dev/null; then
  command -v pdflatex >/dev/null && kpsewhich lmodern.sty >/dev/null || echo "setup.sh: no \
apt-get; install TeX Live with lmodern, babel-portuguese, pgfplots and adjustbox (lecture \
PDFs) and gcc (derive compile) yourself." >&2
fi

python -m pip install -q --upgrade pip
# torch is pinned to the CPU wheel (see pyproject.toml); it is a test extra only.
python -m pip install -q -e ".[test]"
