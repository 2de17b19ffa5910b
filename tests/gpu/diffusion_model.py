"""Builds the pipeline the diffusion server test serves, with nothing downloaded: PixArt-Sigma's
shape (a DiT transformer, a T5 text encoder, a KL VAE and a DPM-Solver scheduler) from configs
with seeded random weights, about 20 GiB in bfloat16 at the default size, and a word-level
tokenizer whose words are "w0".."w31999", saved with save_pretrained so that the server loads it
as it loads any local pipeline.
  python3 diffusion_model.py OUT_DIR [--layers N] [--hidden N] [--text-layers N] [--text-hidden N]
                             [--device cpu|cuda]
Prints "MODEL OUT_DIR BYTES" (the weights' bytes). An OUT_DIR that already holds a pipeline built
with the same arguments is kept."""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_model import VOCAB, word_tokenizer  # noqa: E402


def build_tokenizer():
    # T5's layout: padding 0, end of sequence 1.
    return word_tokenizer({"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}, 512)


def weight_bytes(out):
    total = 0
    for root, _, files in os.walk(out):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in files
                     if n.endswith(".safetensors"))
    return total


def build(out, layers, hidden, text_layers, text_hidden, device):
    import torch
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline,
                           PixArtTransformer2DModel)
    from transformers import T5Config, T5EncoderModel

    stamp = {"layers": layers, "hidden": hidden, "text_layers": text_layers,
             "text_hidden": text_hidden, "vocab": VOCAB, "seed": 1234, "shape": "pixart-sigma"}
    stamp_path = os.path.join(out, "gpusleep-model.json")
    if os.path.exists(stamp_path):
        with open(stamp_path) as f:
            if json.load(f) == stamp:
                return weight_bytes(out)
    with torch.device(device):
        torch.manual_seed(1234)
        text_encoder = T5EncoderModel(T5Config(
            vocab_size=VOCAB, d_model=text_hidden, d_kv=64, d_ff=text_hidden * 4,
            num_layers=text_layers, num_heads=text_hidden // 64, feed_forward_proj="gated-gelu",
            pad_token_id=0, eos_token_id=1)).to(torch.bfloat16)
        torch.manual_seed(1235)
        transformer = PixArtTransformer2DModel(
            num_attention_heads=hidden // 128, attention_head_dim=128, in_channels=4,
            out_channels=8, num_layers=layers, cross_attention_dim=hidden,
            caption_channels=text_hidden, sample_size=64, patch_size=2,
            norm_type="ada_norm_single", use_additional_conditions=False).to(torch.bfloat16)
        torch.manual_seed(1236)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4).to(torch.bfloat16)
    pipe = PixArtSigmaPipeline(tokenizer=build_tokenizer(), text_encoder=text_encoder, vae=vae,
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler())
    os.makedirs(out, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    with open(stamp_path, "w") as f:
        json.dump(stamp, f)
    return weight_bytes(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--text-layers", type=int, default=24)
    p.add_argument("--text-hidden", type=int, default=2048)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    size = build(a.out, a.layers, a.hidden, a.text_layers, a.text_hidden, a.device)
    print(f"MODEL {a.out} {size}", flush=True)


if __name__ == "__main__":
    main()
