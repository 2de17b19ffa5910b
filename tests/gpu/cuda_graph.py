"""Capturing a step into a CUDA graph as PyTorch programs do: warm-up runs on a side stream, the
capture, one replay. Shared by the GPU test programs."""
import torch


def capture(step, static_in, warmup=2):
    """Returns (graph, static_out): `step(static_in)` captured, replayed once, the device synced."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = step(static_in)
    graph.replay()
    torch.cuda.synchronize()
    return graph, static_out
