#!/usr/bin/env bash
# Source this on the GPU machine (which has CUDA and PyTorch but none of our
# Debian build dependencies): unpacks the .debs carried in .devdeps/ (made here
# with `apt-get download`, see bench/README.md) and exports DEPS_PREFIX for make.
set -e
export DEPS_PREFIX=/opt/devdeps
if [ ! -d "$DEPS_PREFIX/usr" ]; then
  mkdir -p "$DEPS_PREFIX"
  for deb in .devdeps/*.deb; do dpkg -x "$deb" "$DEPS_PREFIX"; done
fi
echo "build dependencies unpacked in $DEPS_PREFIX"
set +e
