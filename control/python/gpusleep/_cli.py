"""The `gpusleep` command of an installed wheel: runs the package's own binary
(gpusleep/bin/gpusleep), which finds the library beside it (../lib/libgpusleep.so)."""
import os
import sys

from .launch import cli_path


def main():
    try:
        binary = cli_path()
    except FileNotFoundError as e:
        sys.stderr.write(f"gpusleep: {e}\n")
        return 127
    os.execv(binary, ["gpusleep"] + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
