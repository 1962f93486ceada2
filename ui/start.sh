#!/bin/sh
# Start-up of the Hugging Face Space image: the CMD of Dockerfile and Dockerfile.cpu, run outside Docker by
# tests/test_space.py. It serves app.py on 0.0.0.0:7860 in hosted mode with two model jobs at once and the warm-up:
# as soon as the page serves, a background thread loads the default model and exports the graphs of its "auto"
# backend (ONNX graphs; on a GPU with tensorrt also TensorRT engines) into $DIFFGEO_CACHE.
#
# The application directory (this repository) may be read-only: the app writes only to the directories below, all
# under $XDG_CACHE_HOME (default $HOME/.cache) unless set. Each is created and checked for writing first; the script
# stops and names the one that is not writable. Extra arguments go to app.py (e.g. --threads 2, --model owner/name).
#
#   XDG_CACHE_HOME   $HOME/.cache                     onnxruntime's device id (Microsoft/DeveloperTools)
#   HF_HOME          $HOME/.cache/huggingface         hub downloads (allow-listed hub models)
#   DIFFGEO_CACHE    $HOME/.cache/diffgeo/artifacts   exported ONNX graphs / TensorRT engines (the warm-up's output)
#   GRADIO_TEMP_DIR  $HOME/.cache/gradio              uploads and result files
#   MPLCONFIGDIR     $HOME/.cache/matplotlib          matplotlib's font cache
#   TMPDIR           /tmp                             temporary files
#
# Port and interface: GRADIO_SERVER_PORT (7860), GRADIO_SERVER_NAME (0.0.0.0); model jobs at once:
# DIFFGEO_CONCURRENCY (2). `python` is the first on PATH (the image's virtual environment).
set -eu

cd "$(dirname "$0")/.."

if [ -z "${HOME:-}" ]; then
    echo "start.sh: HOME is not set; the caches default to \$HOME/.cache" >&2
    exit 1
fi
XDG_CACHE_HOME="${XDG_CACHE_HOME:-$HOME/.cache}"
cache="$XDG_CACHE_HOME"
HF_HOME="${HF_HOME:-$cache/huggingface}"
DIFFGEO_CACHE="${DIFFGEO_CACHE:-$cache/diffgeo/artifacts}"
GRADIO_TEMP_DIR="${GRADIO_TEMP_DIR:-$cache/gradio}"
MPLCONFIGDIR="${MPLCONFIGDIR:-$cache/matplotlib}"
TMPDIR="${TMPDIR:-/tmp}"
export XDG_CACHE_HOME HF_HOME DIFFGEO_CACHE GRADIO_TEMP_DIR MPLCONFIGDIR TMPDIR
# No __pycache__ in the (read-only) application directory; installed packages keep their compiled files.
export PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1
export GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"

not_writable=""
for var in XDG_CACHE_HOME HF_HOME DIFFGEO_CACHE GRADIO_TEMP_DIR MPLCONFIGDIR TMPDIR; do
    eval "dir=\$$var"
    probe="$dir/.start-sh-write-test.$$"
    # a test file rather than `test -w`: root passes `test -w` on read-only mounts
    if mkdir -p "$dir" 2>/dev/null && (: >"$probe") 2>/dev/null; then
        rm -f "$probe"
    else
        echo "start.sh: $var=$dir is not writable by user $(id -u); the app writes there" >&2
        not_writable="$not_writable $var"
    fi
done
if [ -n "$not_writable" ]; then
    echo "start.sh: not writable:$not_writable. Point these variables at writable directories" \
        "(on a Space: under /home/user, or /data with persistent storage)." >&2
    exit 1
fi

if ! command -v python >/dev/null 2>&1; then
    echo "start.sh: no python on PATH ($PATH)" >&2
    exit 1
fi

echo "start.sh: $(command -v python); HF_HOME=$HF_HOME DIFFGEO_CACHE=$DIFFGEO_CACHE GRADIO_TEMP_DIR=$GRADIO_TEMP_DIR"
exec python app.py --host "${GRADIO_SERVER_NAME:-0.0.0.0}" --port "${GRADIO_SERVER_PORT:-7860}" --hosted --warmup \
    --concurrency "${DIFFGEO_CONCURRENCY:-2}" "$@"
