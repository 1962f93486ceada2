# syntax=docker/dockerfile:1
# diffgeo on a GPU: the Gradio app as a Hugging Face Docker Space (also runs locally, see README).
#
#   docker build -t diffgeo .
#   docker run --gpus all -p 7860:7860 -v diffgeo-cache:/home/user/.cache diffgeo
#
# Nothing is exported or compiled at build time (a Space builds without a GPU). On the first start the app serves at
# once and, in a background thread (`--warmup`), loads the default model and prepares the "auto" backend: ONNX graphs
# and, where TensorRT imports and a GPU is present, TensorRT engines, written to the artifact cache under
# $DIFFGEO_CACHE (keyed by a hash of the weights, the export spec and the code version, so a new model or new code
# rebuilds instead of reusing stale engines). Mount a volume on /home/user/.cache (or use the Space's persistent
# storage) to keep them across restarts.

# The base image supplies the CUDA runtime and cuDNN for onnxruntime-gpu; torch's CUDA wheel and tensorrt also bring
# their own nvidia-* libraries. Keep the image's CUDA major in step with TORCH_INDEX and with the CUDA build of the
# onnxruntime-gpu and tensorrt wheels pip resolves (CUDA 13 for onnxruntime-gpu 1.31 and tensorrt 11).
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11 from Ubuntu 22.04 (jammy-updates); libglib for OpenCV's headless wheel.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

# Hugging Face Spaces run the container as user 1000.
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.venv/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    DIFFGEO_CACHE=/home/user/.cache/diffgeo/artifacts \
    GRADIO_TEMP_DIR=/home/user/.cache/gradio \
    GRADIO_ANALYTICS_ENABLED=False \
    DIFFGEO_HOSTED=1
WORKDIR /home/user/app
RUN python3.11 -m venv /home/user/.venv

# torch for the GPU: requirements.txt pins the version only (torch==2.13.0; on the CPU development machines that
# resolves to the +cpu wheel), so the CUDA build is installed first from PyTorch's CUDA index; the pin in
# requirements.txt is then already satisfied (2.13.0+cu130 matches ==2.13.0). Then the GPU extras: onnxruntime-gpu
# replaces the CPU onnxruntime wheel (uninstalled first: both own the same module), tensorrt and polygraphy.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu130
COPY --chown=user requirements.txt requirements-gpu.txt ./
RUN pip install --upgrade pip \
 && pip install --index-url "${TORCH_INDEX}" torch==2.13.0 \
 && pip install -r requirements.txt \
 && pip uninstall -y onnxruntime \
 && pip install -r requirements-gpu.txt

COPY --chown=user . .

EXPOSE 7860
# --hosted (also DIFFGEO_HOSTED=1): allow-listed models only (DIFFGEO_ALLOWED_MODELS adds hub ids), no local paths
# in the page or in error messages. Binding to 0.0.0.0 is what a container needs; the app's default is 127.0.0.1.
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860", "--hosted", "--warmup", "--concurrency", "2"]
