#!/usr/bin/env bash
# Builds msg/ with rosidl from the PyPI ROS 2 wheels and installs the generated messages into the
# venv given as $1 (default .venv). Idempotent: cmake rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(cd "${1:-.venv}" && pwd)
py="$venv/bin/python"

# The wheels' exported CMake files carry the wheel builder's Python paths
# (/opt/python/cp311-cp311/...); point them at this interpreter's headers and numpy.
read -r py_inc np_inc < <("$py" -c 'import sysconfig, numpy; print(sysconfig.get_paths()["include"], numpy.get_include())')
{ grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" || true; } \
  | xargs -0 -r sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_inc}#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#${py_inc}#g"

export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$py" -DSFS_INSTALL_PYTHON_SOURCES=OFF -DBUILD_TESTING=OFF >build.log 2>&1 \
  || { tail -40 build.log; exit 1; }
cmake --build build -j"$(nproc)" >>build.log 2>&1 || { tail -40 build.log; exit 1; }
cmake --install build >>build.log 2>&1 || { tail -40 build.log; exit 1; }
echo "built msg/ into $venv (log: build.log)"
