#!/usr/bin/env python3
"""Writes the manifest of one release of a serving framework: every module under the package
prefixes its preset looks at, with the qualified names of the functions it defines
(Class.method), read from the release's published wheel. The presets test
(tests/presets/test_presets.py) holds the presets against these manifests.

  scripts/preset_manifest.py vllm 0.33.0            # downloads the wheel into a temporary folder
  scripts/preset_manifest.py sglang 0.5.23 --wheel /tmp/sglang-0.5.23-....whl
  scripts/preset_manifest.py --all                  # every release in SUPPORTED, one at a time

The manifest goes to control/presets/manifests/PACKAGE-VERSION.json unless --out says where.
The wheel is read in place (nothing is installed or imported); a downloaded one is deleted after."""
import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_DIR = os.path.join(ROOT, "control", "presets", "manifests")

# Where each framework keeps its caches, its loaders, its graph capture and its shared buffers:
# the presets match modules under these prefixes, so the manifests hold these and nothing else.
# Storage back ends (sglang.srt.mem_cache.storage) only move host copies: left out.
SCOPES = {
    "vllm": ["vllm.v1.worker", "vllm.worker", "vllm.model_executor.model_loader",
             "vllm.compilation", "vllm.distributed.device_communicators", "vllm.device_allocator"],
    "sglang": ["sglang.srt.model_executor", "sglang.srt.mem_cache", "sglang.srt.model_loader",
               "sglang.srt.distributed.device_communicators"],
    "transformers": ["transformers.cache_utils", "transformers.generation.continuous_batching",
                     "transformers.modeling_utils", "transformers.core_model_loading",
                     "transformers.integrations.accelerate", "transformers.cli.serving"],
}

# The releases the presets are held against: the newest of each, and those RL frameworks pin.
SUPPORTED = {
    "vllm": ["0.8.5", "0.11.0", "0.29.0", "0.33.0"],
    "sglang": ["0.4.6.post5", "0.4.10", "0.5.23"],
    "transformers": ["5.17.0"],
}

PIP_PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                "--platform", "manylinux_2_34_x86_64", "--platform", "manylinux_2_31_x86_64",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64", "--platform", "any"]


def in_scope(module, prefixes):
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_name(path):
    """'vllm/v1/worker/gpu_model_runner.py' -> 'vllm.v1.worker.gpu_model_runner'."""
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def qualnames(source):
    """The qualified names of the functions a module defines at module or class level, as
    Python's __qualname__ has them (Class.method); functions inside functions are left out."""
    names = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                names.append(name)
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            elif isinstance(child, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                walk(child, prefix)  # definitions under `if TYPE_CHECKING:`, `try:` and the like

    walk(ast.parse(source), "")
    return sorted(set(names))


def read_wheel(path, prefixes):
    modules = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if not name.endswith(".py"):
                continue
            module = module_name(name)
            if not in_scope(module, prefixes) or ".storage." in module or ".test" in module:
                continue
            try:
                modules[module] = qualnames(z.read(name).decode("utf-8"))
            except SyntaxError as e:
                raise SystemExit(f"{name}: cannot parse: {e}")
    return modules


def download(package, version, dest):
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PIP_PLATFORM,
           "-d", dest, f"{package}=={version}"]
    subprocess.run(cmd, check=True)
    (wheel,) = [f for f in os.listdir(dest) if f.endswith(".whl")]
    return os.path.join(dest, wheel)


def write_manifest(path, package, version, wheel, modules):
    """One module per line, so that a new release's manifest reads as a diff."""
    head = {"package": package, "version": version, "source": os.path.basename(wheel),
            "scopes": SCOPES[package]}
    lines = [json.dumps(head)[:-1] + ', "modules": {']
    items = sorted(modules.items())
    for i, (module, names) in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        lines.append(f"  {json.dumps(module)}: {json.dumps(names)}{comma}")
    lines.append("}}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def make(package, version, wheel=None, out=None):
    if package not in SCOPES:
        raise SystemExit(f"unknown package {package}: one of {', '.join(SCOPES)}")
    out = out or os.path.join(MANIFEST_DIR, f"{package}-{version}.json")
    with tempfile.TemporaryDirectory() as tmp:
        path = wheel or download(package, version, tmp)
        modules = read_wheel(path, SCOPES[package])
        if not modules:
            raise SystemExit(f"{path}: no module under {', '.join(SCOPES[package])}")
        write_manifest(out, package, version, path, modules)
    functions = sum(len(v) for v in modules.values())
    print(f"{out}: {len(modules)} modules, {functions} functions")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("package", nargs="?")
    p.add_argument("version", nargs="?")
    p.add_argument("--wheel", help="read this wheel instead of downloading it")
    p.add_argument("--out", help="where to write the manifest")
    p.add_argument("--all", action="store_true", help="every release in SUPPORTED")
    a = p.parse_args()
    if a.all:
        for package, versions in SUPPORTED.items():
            for version in versions:
                make(package, version)
    elif a.package and a.version:
        make(a.package, a.version, a.wheel, a.out)
    else:
        p.error("give PACKAGE VERSION, or --all")


if __name__ == "__main__":
    main()
