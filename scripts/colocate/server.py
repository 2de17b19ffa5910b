"""The stand-in rollout server of the co-location benchmark, written the way a user writes one and
knowing nothing of gpusleep: PyTorch and transformers, a Llama model built from a config with
seeded random weights (nothing downloaded; every start has the same weights), a static KV cache
filling most of the rest of the GPU, and greedy decoding whose one-token step is captured in a
CUDA graph. Commands on stdin, after "READY tokens=HASH ...":
  first     prefill the fixed prompts: "OK first=SECONDS" (the time to a first token)
  generate  prefill and decode: "OK tokens=HASH" (the same hash on every start)
  refit     write the weights again through the load path (as RL does after each update):
            "OK refit=SECONDS"
  exit
"""
import argparse
import hashlib
import os
import sys
import time

# Greedy decoding gives the same tokens every time only with deterministic kernels (batched
# prefill otherwise picks nondeterministic ones); cuBLAS needs this set before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                                "gpu"))
from static_cache import make_static_cache  # noqa: E402


def main():
    t0 = time.time()
    torch.use_deterministic_algorithms(True)
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=36)
    ap.add_argument("--kv-gib", type=float, default=40.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=32)
    args = ap.parse_args()
    dtype = torch.bfloat16
    config = LlamaConfig(hidden_size=5120, intermediate_size=13824, num_hidden_layers=args.layers,
                         num_attention_heads=40, num_key_value_heads=8, vocab_size=32000,
                         max_position_embeddings=1 << 20)
    per_token = 2 * config.num_key_value_heads * (config.hidden_size // 40) * 2 * args.layers
    max_len = int(args.kv_gib * (1 << 30) / per_token / args.batch) // 256 * 256

    def load_weights():
        """The load path: seeded random weights, as a checkpoint would give the same ones."""
        torch.manual_seed(1234)
        with torch.device("cuda"):
            torch.set_default_dtype(dtype)
            m = LlamaForCausalLM(config).eval()
            torch.set_default_dtype(torch.float32)
        return m

    model = load_weights()
    # The trainer's update lands here (kept in host memory, as an RL weight sync would bring it).
    host_weights = {k: v.to("cpu", copy=True).pin_memory() for k, v in model.state_dict().items()}
    cache = make_static_cache(config, args.batch, max_len, dtype)
    prompts = torch.randint(0, config.vocab_size, (args.batch, args.prompt),
                            generator=torch.Generator().manual_seed(7)).cuda()
    static_tok = torch.zeros(args.batch, 1, dtype=torch.long, device="cuda")
    static_pos = torch.zeros(1, dtype=torch.long, device="cuda")

    def step():
        out = model(input_ids=static_tok, past_key_values=cache, cache_position=static_pos,
                    use_cache=True)
        return out.logits[:, -1].argmax(-1)

    @torch.no_grad()
    def prefill():
        cache.reset()
        out = model(input_ids=prompts, past_key_values=cache,
                    cache_position=torch.arange(args.prompt, device="cuda"), use_cache=True)
        return out.logits[:, -1].argmax(-1)

    with torch.no_grad():
        first = prefill()
        static_tok.copy_(first.view(args.batch, 1))
        static_pos.fill_(args.prompt)
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
        static_tok.copy_(tokens[0].view(args.batch, 1))
        for i in range(args.new):
            static_pos.fill_(args.prompt + i)
            graph.replay()
            tokens.append(static_next.clone())
            static_tok.copy_(static_next.view(args.batch, 1))
        torch.cuda.synchronize()
        return hashlib.sha256(torch.stack(tokens).cpu().numpy().tobytes()).hexdigest()[:16]

    tokens = generate()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    kv = sum(t.numel() * t.element_size() for layer in getattr(cache, "layers", [])
             for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
             if t is not None)
    print(f"READY tokens={tokens} startup={time.time() - t0:.2f} weights_bytes={weights} "
          f"kv_bytes={kv} max_len={max_len}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "exit":
            print("OK exit", flush=True)
            return
        t = time.perf_counter()
        if cmd == "first":
            with torch.no_grad():
                prefill()
            torch.cuda.synchronize()
            print(f"OK first={time.perf_counter() - t:.4f}", flush=True)
        elif cmd == "generate":
            print(f"OK tokens={generate()}", flush=True)
        elif cmd == "refit":
            with torch.no_grad():
                model.load_state_dict(host_weights)
            torch.cuda.synchronize()
            print(f"OK refit={time.perf_counter() - t:.4f}", flush=True)
        else:
            print("ERR unknown command", flush=True)


if __name__ == "__main__":
    main()
