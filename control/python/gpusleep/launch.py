"""Starting programs under the library: where libgpusleep.so, the CLI and the presets are, the
environment a worker needs to run under the library, and launch()."""
import glob
import os
import subprocess
import time

from .client import Process, runtime_dir
from .errors import ConnectionFailedError

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_SOURCE_ROOT = os.path.normpath(os.path.join(_PACKAGE, "..", "..", ".."))

# Library options (docs/options.md) that environment() and launch() take as keywords:
# gate="wake" sets GPUSLEEP_GATE=wake. preset, rules, tag, policy and log_level have their
# own arguments.
OPTIONS = ("python_stacks", "gate", "gate_drain_ms", "disable", "control", "eager_mirrors",
           "keep_mirrors", "copy_streams", "copy_chunk", "prep_threads", "max_message",
           "driver_library", "runtime_dir")


def _install_prefix():
    """The prefix `cmake --install` put the package under, or None (wheel, source tree)."""
    try:
        from . import _install  # written by cmake --install only
    except ImportError:
        return None
    return os.path.normpath(os.path.join(_PACKAGE, _install.PREFIX_FROM_PACKAGE))


def _first(candidates):
    for c in candidates:
        if c and os.path.isfile(c):
            return os.path.realpath(c)
    return None


def _layouts():
    """Prefixes to look in, in order: the package itself (a wheel: gpusleep/{bin,lib,share}),
    the cmake --install prefix, then build trees of the source tree (build*/)."""
    prefixes = [_PACKAGE]
    installed = _install_prefix()
    if installed:
        prefixes.append(installed)
    prefixes += sorted(glob.glob(os.path.join(_SOURCE_ROOT, "build*")))
    return prefixes


def library_path():
    """The path of libgpusleep.so: $GPUSLEEP_LIBRARY, else the one shipped in the package
    (gpusleep/lib/libgpusleep.so in a wheel), else PREFIX/lib/libgpusleep.so of a cmake
    install, else a build tree's. Raises FileNotFoundError."""
    configured = os.environ.get("GPUSLEEP_LIBRARY")
    if configured:
        if not os.path.isfile(configured):
            raise FileNotFoundError(f"GPUSLEEP_LIBRARY={configured}: no such file")
        return os.path.realpath(configured)
    found = _first(os.path.join(p, "lib", "libgpusleep.so") for p in _layouts())
    if found is None:
        raise FileNotFoundError("libgpusleep.so not found (looked in " + ", ".join(_layouts()) +
                                "); set GPUSLEEP_LIBRARY")
    return found


def cli_path():
    """The path of the gpusleep command's binary: the package's (gpusleep/bin/gpusleep in a
    wheel), a cmake install's PREFIX/bin/gpusleep, or a build tree's. Raises FileNotFoundError."""
    found = _first(os.path.join(p, "bin", "gpusleep") for p in _layouts())
    if found is None:
        raise FileNotFoundError("the gpusleep binary was not found (looked in " +
                                ", ".join(_layouts()) + ")")
    return found


def preset_dirs():
    """Where presets (tagging rule files) are looked for, in order."""
    dirs = []
    if os.environ.get("GPUSLEEP_PRESET_DIR"):
        dirs.append(os.environ["GPUSLEEP_PRESET_DIR"])
    dirs.append(os.path.join(_PACKAGE, "share", "gpusleep", "presets"))
    installed = _install_prefix()
    if installed:
        dirs.append(os.path.join(installed, "share", "gpusleep", "presets"))
    dirs.append(os.path.join(_SOURCE_ROOT, "control", "presets"))
    return dirs


def presets():
    """The names of the presets found."""
    names = set()
    for d in filter(os.path.isdir, preset_dirs()):
        names.update(f[:-5] for f in os.listdir(d) if f.endswith(".json"))
    return sorted(names)


def preset_path(name):
    """The rule file of preset `name` (pytorch, transformers, vllm, sglang, nccl, ...).
    Raises ValueError for a name that is not one."""
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"a preset name is letters, digits, '_' and '-', not {name!r}")
    found = _first(os.path.join(d, name + ".json") for d in preset_dirs())
    if found is None:
        raise ValueError(f"no preset {name!r} (known: {', '.join(presets()) or 'none'})")
    return found


def _option_value(value):
    if value is True:
        return "1"
    if value is False:
        return "0"
    return str(value)


def environment(preset=None, rules=None, tag=None, policy=None, log_level=None, base=None,
                **options):
    """The variables a program needs to run under the library, as a dict to add to its
    environment: LD_PRELOAD (the library first, then what `base`, default os.environ, already
    preloads) and GPUSLEEP_* (docs/options.md), as `gpusleep run` sets them.

    preset: a shipped rule set by name (GPUSLEEP_RULES=its file); rules: a rules file path.
    tag: the default tag (GPUSLEEP_DEFAULT_TAG). policy: {"tag": "offload"|"discard"} or
    "tag=policy,..." (GPUSLEEP_POLICY). log_level: off, error, warn, info, debug.
    options: any of OPTIONS, e.g. gate="wake", keep_mirrors=False, copy_chunk="64M"."""
    if preset is not None and rules is not None:
        raise ValueError("give preset or rules, not both")
    base = os.environ if base is None else base
    lib = library_path()
    old = [p for p in base.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p]
    env = {"LD_PRELOAD": ":".join([lib] + [p for p in old if os.path.realpath(p) != lib])}
    if preset is not None:
        env["GPUSLEEP_RULES"] = preset_path(preset)
    if rules is not None:
        if not os.path.isfile(rules):
            raise FileNotFoundError(f"rules file {rules}: no such file")
        env["GPUSLEEP_RULES"] = os.path.realpath(rules)
    if tag is not None:
        env["GPUSLEEP_DEFAULT_TAG"] = tag
    if policy is not None:
        if isinstance(policy, dict):
            policy = ",".join(f"{t}={p}" for t, p in policy.items())
        env["GPUSLEEP_POLICY"] = policy
    if log_level is not None:
        env["GPUSLEEP_LOG_LEVEL"] = log_level
    for name, value in options.items():
        if name not in OPTIONS:
            raise TypeError(f"unknown option {name!r} (options: {', '.join(OPTIONS)})")
        if value is not None:
            env["GPUSLEEP_" + name.upper()] = _option_value(value)
    return env


class Launched:
    """A program started by launch(): `pid`, `popen` (its subprocess.Popen), attach() to
    control it, and wait()/terminate()/kill(). A context manager that kills it on exit."""

    def __init__(self, popen, socket_path):
        self.popen = popen
        self.pid = popen.pid
        self.socket_path = socket_path

    def __repr__(self):
        return f"Launched(pid={self.pid})"

    def attach(self, timeout=None, ready_timeout=60.0):
        """The Process to control it. The library opens the socket at the program's first CUDA
        allocation: this waits up to `ready_timeout` seconds for it (ConnectionFailedError if
        the program exits first or it does not come)."""
        deadline = time.monotonic() + ready_timeout
        while not os.path.exists(self.socket_path):
            if self.popen.poll() is not None:
                raise ConnectionFailedError(f"the program exited (status {self.popen.returncode})"
                                            " before opening its control socket", pid=self.pid)
            if time.monotonic() > deadline:
                raise ConnectionFailedError(f"no control socket {self.socket_path} after "
                                            f"{ready_timeout:g} s (has the program allocated GPU "
                                            "memory?)", pid=self.pid)
            time.sleep(0.02)
        return Process(self.socket_path, self.pid, timeout)

    def wait(self, timeout=None):
        return self.popen.wait(timeout)

    def poll(self):
        return self.popen.poll()

    def terminate(self):
        self.popen.terminate()

    def kill(self):
        self.popen.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


def launch(argv, preset=None, rules=None, tag=None, policy=None, log_level=None, env=None,
           **kwargs):
    """Starts `argv` under the library, as `gpusleep run` does, and returns a Launched.
    env: variables added to os.environ for it (a value of None removes one). The arguments
    preset, rules, tag, policy, log_level and the OPTIONS keywords are environment()'s; other
    keywords go to subprocess.Popen (stdin, stdout, cwd, ...)."""
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTIONS}
    full = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    full.update(environment(preset=preset, rules=rules, tag=tag, policy=policy,
                            log_level=log_level, base=full, **options))
    directory = runtime_dir(full)
    popen = subprocess.Popen(list(argv), env=full, **kwargs)
    return Launched(popen, os.path.join(directory, f"{popen.pid}.sock"))
