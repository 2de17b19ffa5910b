"""A small inference server written the way a user writes one with PyTorch and transformers, and
knowing nothing of gpusleep: a Llama model built from a config with seeded random weights (nothing
downloaded), a static KV cache, and greedy decoding whose one-token step is captured in a CUDA
graph. It answers on stdin after "READY tokens=HASH":
  generate   prefill the fixed prompts and decode; "OK tokens=HASH" (the same hash every time)
  exit
"""
import hashlib
import sys

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from static_cache import make_static_cache

BATCH, PROMPT, NEW, MAX_LEN = 4, 32, 24, 2048


def main():
    torch.manual_seed(1234)
    dtype = torch.bfloat16
    config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=12,
                         num_attention_heads=16, num_key_value_heads=8, vocab_size=32000,
                         max_position_embeddings=MAX_LEN)
    model = LlamaForCausalLM(config).to(dtype=dtype).to("cuda").eval()
    cache = make_static_cache(config, BATCH, MAX_LEN, dtype)
    prompts = torch.randint(0, config.vocab_size, (BATCH, PROMPT),
                            generator=torch.Generator().manual_seed(7)).cuda()
    static_tok = torch.zeros(BATCH, 1, dtype=torch.long, device="cuda")
    static_pos = torch.zeros(1, dtype=torch.long, device="cuda")

    def step():
        out = model(input_ids=static_tok, past_key_values=cache, cache_position=static_pos,
                    use_cache=True)
        return out.logits[:, -1].argmax(-1)

    @torch.no_grad()
    def prefill():
        cache.reset()
        out = model(input_ids=prompts, past_key_values=cache,
                    cache_position=torch.arange(PROMPT, device="cuda"), use_cache=True)
        return out.logits[:, -1].argmax(-1)

    with torch.no_grad():
        first = prefill()
        static_tok.copy_(first.view(BATCH, 1))
        static_pos.fill_(PROMPT)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_next = step()

    @torch.no_grad()
    def generate():
        tokens = [prefill()]
        static_tok.copy_(tokens[0].view(BATCH, 1))
        for i in range(NEW):
            static_pos.fill_(PROMPT + i)
            graph.replay()
            tokens.append(static_next.clone())
            static_tok.copy_(static_next.view(BATCH, 1))
        torch.cuda.synchronize()
        return hashlib.sha256(torch.stack(tokens).cpu().numpy().tobytes()).hexdigest()[:16]

    print(f"READY tokens={generate()} transformers={transformers.__version__}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "exit":
            print("OK exit", flush=True)
            return
        if cmd == "generate":
            print(f"OK tokens={generate()}", flush=True)
        else:
            print("ERR unknown command", flush=True)


if __name__ == "__main__":
    main()
