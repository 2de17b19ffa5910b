"""A transformers StaticCache on the GPU, built with whichever argument names this version of
transformers takes (they changed across releases). Shared by the GPU test's server and the
co-location benchmark's server."""
import inspect

from transformers import StaticCache


def make_static_cache(config, batch, max_len, dtype):
    kwargs = {"config": config, "max_cache_len": max_len}
    params = inspect.signature(StaticCache.__init__).parameters
    if "max_batch_size" in params:
        kwargs["max_batch_size"] = batch
    elif "batch_size" in params:
        kwargs["batch_size"] = batch
    if "device" in params:
        kwargs["device"] = "cuda"
    if "dtype" in params:
        kwargs["dtype"] = dtype
    return StaticCache(**kwargs)
