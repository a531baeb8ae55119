"""Shared by test modules (and used by test_cli_imports.py)."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path


HEAVY = ("torch", "torchvision", "avalanche", "kornia", "lightly", "timm", "matplotlib", "seaborn", "networkx",
         "jinja2", "scipy", "sklearn", "pandas", "dask")
ROOT = Path(__file__).resolve().parents[2]


# Runs the dncsim command (exactly as `python -m dncsim ARGS` does) in this process, then prints the
# heavy packages it imported as the last line of stdout and exits with the command's status.
COMMAND = textwrap.dedent("""
    import json, runpy, sys
    heavy = set(json.loads(sys.argv[1]))
    sys.argv = ["dncsim", *sys.argv[2:]]
    try:
        runpy.run_module("dncsim", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & heavy)))
    sys.exit(code)
""")


def python(code: str, *args: str, cwd=ROOT):
    """Run ``code`` in a fresh interpreter with ``HEAVY`` as its first argument."""
    return subprocess.run([sys.executable, "-c", code, json.dumps(HEAVY), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def dncsim(*args, cwd=ROOT):
    """(status, stdout without the last line, stderr, heavy packages imported) of ``dncsim ARGS``."""
    p = python(COMMAND, *args, cwd=cwd)
    out, _, last = p.stdout.rstrip("\n").rpartition("\n")
    assert last.startswith("["), p.stdout + p.stderr
    return p.returncode, out, p.stderr, json.loads(last)
