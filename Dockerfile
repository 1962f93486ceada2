# syntax=docker/dockerfile:1
# diffgeo on a GPU: the Gradio app as a Hugging Face Docker Space (also runs locally, see README). For the free CPU
# Space hardware use Dockerfile.cpu (no CUDA base, CPU wheels; same app, model and start-up script).
#
#   docker build -t diffgeo .
#   docker run --gpus all -p 7860:7860 -v diffgeo-cache:/home/user/.cache diffgeo
#
# Nothing is exported or compiled at build time (a Space builds without a GPU). The start-up script ui/start.sh (the
# CMD; tests/test_space.py runs it outside Docker from a read-only copy of the app) checks that the cache directories
# are writable, then serves app.py on 0.0.0.0:7860 at once and, in a background thread (`--warmup`), loads the default
# model and prepares the "auto" backend: ONNX graphs and, where TensorRT imports and a GPU is present, TensorRT
# engines, written to the artifact cache under $DIFFGEO_CACHE (keyed by a hash of the weights, the export spec and the
# code version, so a new model or new code rebuilds instead of reusing stale engines). Mount a volume on
# /home/user/.cache (or use the Space's persistent storage) to keep them across restarts.

# The base image supplies the CUDA runtime and cuDNN for onnxruntime-gpu; torch's CUDA wheel and tensorrt also bring
# their own nvidia-* libraries. Keep the image's CUDA major in step with TORCH_INDEX and with the CUDA build of the
# onnxruntime-gpu and tensorrt wheels pip resolves (CUDA 13 for onnxruntime-gpu 1.31 and tensorrt 11).
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

# GLIBC_TUNABLES: glibc's malloc backs its large allocations with transparent huge pages (where the host's THP mode
# is "always" or "madvise"): a new 512 MiB attention tensor of SD 1.5 costs 256 page faults instead of 131,072.
# Measured on a 2-core CPU (benchmarks/results/scale.md): SD 1.5's eager eps_jvp 30.4 -> 25.9 s a call.
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1

# Python 3.11 from Ubuntu 22.04 (jammy-updates); libglib for OpenCV's headless wheel.
# DL3008 (pin apt versions): the CUDA base image fixes the Ubuntu release; jammy's archive drops superseded package
# versions, so exact pins would break the build at the next security update instead of making it reproducible.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

# Hugging Face Spaces run the container as user 1000 (named by number: hadolint DL3066). ui/start.sh puts HF_HOME,
# DIFFGEO_CACHE, GRADIO_TEMP_DIR and MPLCONFIGDIR under $HOME/.cache unless they are set (e.g. to /data/... with the
# Space's persistent storage).
RUN useradd -m -u 1000 user
USER 1000
ENV HOME=/home/user \
    PATH=/home/user/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    DIFFGEO_HOSTED=1
WORKDIR /home/user/app
RUN python3.11 -m venv /home/user/.venv

# torch for the GPU: requirements.txt pins the version only (torch==2.13.0; on the CPU development machines that
# resolves to the +cpu wheel), so the CUDA build is installed first from PyTorch's CUDA index; the pin in
# requirements.txt is then already satisfied (2.13.0+cu130 matches ==2.13.0). Then the GPU extras: onnxruntime-gpu
# replaces the CPU onnxruntime wheel (uninstalled first: both own the same module), tensorrt and polygraphy.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu130
COPY requirements.txt requirements-batch.txt requirements-gpu.txt ./
RUN pip install pip==26.3 \
 && pip install --index-url "${TORCH_INDEX}" torch==2.13.0 \
 && pip install -r requirements.txt \
 && pip uninstall -y onnxruntime \
 && pip install -r requirements-gpu.txt

# The application is owned by root: read-only to the app's user, who writes only to the cache directories.
COPY . .

EXPOSE 7860
# Hosted mode (allow-listed models only, DIFFGEO_ALLOWED_MODELS adds hub ids, no local paths in the page or in error
# messages), 0.0.0.0:7860, two model jobs at once, the warm-up. See ui/start.sh for the variables it reads.
CMD ["sh", "ui/start.sh"]
