#!/usr/bin/env bash
# Downloads, into DIR (default .whl), the wheels `transformers serve` and the diffusion server
# test need beyond what a GPU machine with PyTorch 2.11 and transformers 5.17 has (FastAPI,
# Starlette, Uvicorn, Pydantic, the OpenAI types and what they pull in; diffusers and Pillow), for
# Python 3.12 on x86-64 Linux, so that they can travel
# to a machine with no package registry. There:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site DIR/*.whl
#   export PYTHONPATH=/tmp/site
# (scripts/servers.sh does this itself when DIR is there).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
# One version each; openai 1.x and FastAPI 0.115 are what transformers 5.17's serving code was
# written against (openai>=1.98, pydantic>=2).
wheels=(
  fastapi==0.115.14
  starlette==0.46.2
  uvicorn==0.34.3
  pydantic==2.11.7
  pydantic-core==2.33.2
  annotated-types==0.7.0
  typing-inspection==0.4.1
  openai==1.109.1
  jiter==0.10.0
  distro==1.9.0
  sniffio==1.3.1
  # The diffusion server test (tests/gpu/test_diffusion.py): diffusers and the image library it
  # imports.
  diffusers==0.42.1
  pillow==11.3.0
)
mkdir -p "$dest"
for w in "${wheels[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$dest" "$w"
done
echo "$dest: $(ls "$dest"/*.whl | wc -l) wheels, $(du -sh "$dest" | cut -f1)"
