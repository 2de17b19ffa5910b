"""gpusleep: put GPU processes' memory to sleep and wake it, from Python.

From outside a process:
    import gpusleep
    proc = gpusleep.attach(pid=1234)        # or socket=PATH; gpusleep.processes() finds them
    proc.sleep("kv_cache")                  # one tag or a list; None: every tag
    proc.wake(wait=30)                      # wait up to 30 s for memory held elsewhere
    gpusleep.sleep_all(["weights"])         # every process running with the library, in parallel
    gpusleep.swap(sleep=[a], wake=[b])      # b wakes into the memory a releases, at once

Starting programs under the library:
    handle = gpusleep.launch(["python", "serve.py"], preset="vllm")
    env = gpusleep.environment(preset="vllm")   # LD_PRELOAD and GPUSLEEP_* for workers you spawn

Inside a process running under the library (its other GPU work goes on):
    gpusleep.sleep("kv_cache"); gpusleep.wake("kv_cache")
    with gpusleep.region("weights"):
        load_weights()

Failures raise GpusleepError subclasses, one per error code (gpusleep.errors). docs/python.md.
"""
from . import errors
from .client import (PROTOCOL_VERSION, READ_TIMEOUT, Process, attach, check_runtime_dir,
                     processes, runtime_dir, sleep_all, wake_all)
from .errors import *  # noqa: F401,F403 - GpusleepError and one class per code
from .errors import GpusleepError
from . import compat  # noqa: E402,F401 - gpusleep.compat
from .inprocess import region, sleep, this_process, wake
from .swap import SwapError, SwapResult, swap
from .launch import (Launched, cli_path, environment, launch, library_path, preset_path,
                     presets)

__version__ = "0.1.0"

__all__ = ["PROTOCOL_VERSION", "READ_TIMEOUT", "GpusleepError", "Launched", "Process", "attach",
           "check_runtime_dir", "cli_path", "environment", "errors", "launch", "library_path",
           "preset_path", "presets", "processes", "region", "runtime_dir", "sleep", "sleep_all",
           "SwapError", "SwapResult", "swap",
           "this_process", "wake", "wake_all"] + errors.__all__
