"""Builds the model the server tests serve, with nothing downloaded: a Llama from a config with
seeded random weights (about 2 GiB in bfloat16 at the default size), a word-level tokenizer whose
words are "w0".."w31999", and a greedy generation config, saved with save_pretrained so that a
server loads it as it loads any local model.
  python3 serve_model.py OUT_DIR [--layers N] [--hidden N] [--device cpu|cuda]
Prints "MODEL OUT_DIR BYTES" (the weights' bytes). An OUT_DIR that already holds a model built
with the same arguments is kept."""
import argparse
import json
import os

VOCAB = 32000


def word_tokenizer(special, max_length):
    """A word-level tokenizer of VOCAB tokens: the `special` ones first ({"unk_token": "<unk>",
    ...} in id order, named as PreTrainedTokenizerFast names them; unk_token required), then the
    words "w0", "w1", ..., split at whitespace and joined by spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(special.values())}
    for i in range(VOCAB - len(special)):
        vocab[f"w{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=special["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # words joined by spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **special)


def build_tokenizer():
    return word_tokenizer({"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}, 4096)


def build(out, layers, hidden, device):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    stamp = {"layers": layers, "hidden": hidden, "vocab": VOCAB, "seed": 1234}
    stamp_path = os.path.join(out, "gpusleep-model.json")
    if os.path.exists(stamp_path):
        with open(stamp_path) as f:
            if json.load(f) == stamp:
                return sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out)
                           if n.endswith(".safetensors"))
    torch.manual_seed(1234)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                         num_hidden_layers=layers, num_attention_heads=max(hidden // 128, 1),
                         num_key_value_heads=max(hidden // 256, 1), vocab_size=VOCAB,
                         max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                         torch_dtype="bfloat16")
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(do_sample=False, bos_token_id=1, eos_token_id=2,
                                               max_new_tokens=64)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    with open(stamp_path, "w") as f:
        json.dump(stamp, f)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    print(f"MODEL {a.out} {build(a.out, a.layers, a.hidden, a.device)}", flush=True)


if __name__ == "__main__":
    main()
