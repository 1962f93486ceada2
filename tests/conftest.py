"""Shared fixtures: tiny random diffusers models saved to a temporary folder and loaded through ``load_model``."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("TEST_TORCH_THREADS", "1")))


def save_tiny_pixel_model(folder, *, size: int = 16, seed: int = 0) -> str:
    """A tiny UNet2DModel pipeline (attention at the lowest resolution and in the mid block), in diffusers format."""
    from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=size, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=8,
    )
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return str(folder)


def save_tiny_latent_model(folder, *, size: int = 16, seed: int = 0) -> str:
    """A tiny Stable-Diffusion-style pipeline (UNet2DConditionModel, AutoencoderKL, CLIP text encoder + tokenizer)."""
    import json

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    os.makedirs(folder, exist_ok=True)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), latent_channels=4,
        norm_num_groups=4, sample_size=size,
    )
    unet = UNet2DConditionModel(
        sample_size=size // 2, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4,
    )
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
    tok_dir = os.path.join(folder, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    with open(os.path.join(tok_dir, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(tok_dir, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"),
                              model_max_length=8)
    tokenizer.save_pretrained(tok_dir)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=8))
    unet.save_pretrained(os.path.join(folder, "unet"))
    vae.save_pretrained(os.path.join(folder, "vae"))
    text_encoder.save_pretrained(os.path.join(folder, "text_encoder"))
    DDIMScheduler(num_train_timesteps=1000).save_pretrained(os.path.join(folder, "scheduler"))
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]}
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_pixel_dir(tmp_path_factory) -> str:
    return save_tiny_pixel_model(tmp_path_factory.mktemp("tiny_pixel"))


@pytest.fixture(scope="session")
def tiny_latent_dir(tmp_path_factory) -> str:
    return save_tiny_latent_model(tmp_path_factory.mktemp("tiny_latent"))


@pytest.fixture(scope="session")
def tiny_model(tiny_pixel_dir):
    """The tiny pixel model, float32, on the CPU (shared: do not modify)."""
    from pipeline import load_model

    return load_model(tiny_pixel_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_model64(tiny_pixel_dir):
    """The tiny pixel model in float64, for reference checks."""
    from pipeline import load_model

    return load_model(tiny_pixel_dir, device="cpu", dtype=torch.float64)


@pytest.fixture(scope="session")
def tiny_latent_model(tiny_latent_dir):
    from pipeline import load_model

    return load_model(tiny_latent_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_model_bf16(tiny_pixel_dir):
    """The tiny pixel model in bfloat16 (the CPU half precision), on the CPU (shared: do not modify)."""
    from pipeline import load_model

    return load_model(tiny_pixel_dir, device="cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="session")
def tiny_latent_model_bf16(tiny_latent_dir):
    """The tiny latent model in bfloat16, on the CPU (shared: do not modify)."""
    from pipeline import load_model

    return load_model(tiny_latent_dir, device="cpu", dtype=torch.bfloat16)


@pytest.fixture
def tensorrt_cuda():
    """Skip (with the reason) unless tensorrt imports and a CUDA device is present."""
    try:
        import tensorrt  # noqa: F401
    except Exception as err:
        pytest.skip(f"tensorrt unavailable: {type(err).__name__}: {err}")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
