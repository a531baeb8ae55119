#!/usr/bin/env bash
# Run on a machine that reaches the package index, before going to a CUDA machine without internet:
# downloads, for the target's Python and platform, the wheels of everything dncsim, pytest and hypothesis
# need that a CUDA machine with PyTorch lacks (torch, torchvision, the nvidia-* and triton packages and
# their own dependencies are left out), plus a wheel of dncsim itself. benchmarks/gpu_check.sh installs
# them there with --no-index.
#
#   benchmarks/gpu_wheels.sh [DEST]          (default DEST: gpu-wheels in the repository, git-ignored)
#   PYTHON=python3.11 PLATFORM=manylinux2014_x86_64 benchmarks/gpu_wheels.sh   the target's Python version
#                                            and platform (the versions are resolved with PYTHON here)
#   HAVE=have.txt benchmarks/gpu_wheels.sh   also leave out what the target has (`pip freeze > have.txt` there)
#
# A dependency that ships no wheel is built here into a wheel (pip wheel --no-deps) when it is pure Python.
# The QP solvers of avalanche's qpsolvers[open_source_solvers] extra are left out (dncsim solves no QP;
# qpsolvers imports without them). Prints the carried size.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$(realpath -m "${1:-$root/gpu-wheels}")"
python="${PYTHON:-python3}"
pyver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
platform="${PLATFORM:-manylinux2014_x86_64}"
abi="cp${pyver/./}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dest"
target=(--only-binary=:all: --python-version "$pyver" --platform "$platform" --platform "manylinux_2_28_x86_64"
        --platform "manylinux_2_17_x86_64" --implementation cp --abi "$abi" --abi abi3 --abi none)

# the requirements: setup.cfg's install_requires, and pytest + hypothesis for the CUDA tests
"$python" - "$root/setup.cfg" > "$tmp/requirements.txt" <<'EOF'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
reqs = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip() and not r.strip().startswith("#")]
print("\n".join(reqs + ["pytest>=7.4", "hypothesis>=6.90"]))
EOF

resolve() {   # resolve() OUT.json REQUIREMENT...: what pip would install (metadata only), for this Python
    local out="$1"; shift
    "$python" -m pip install --quiet --dry-run --ignore-installed --report "$out" "$@"
}
resolve "$tmp/all.json" -r "$tmp/requirements.txt"
resolve "$tmp/torch.json" torch torchvision
"$python" - "$tmp/all.json" "$tmp/torch.json" "${HAVE:-}" > "$tmp/carry.txt" <<'EOF'
import json, re, sys
def names(path):
    return {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
            for i in json.load(open(path))["install"]}
want, torch = names(sys.argv[1]), names(sys.argv[2])
have = set()
if sys.argv[3]:
    have = {re.sub(r"[-_.]+", "-", line.split("==")[0].split(" @ ")[0].strip()).lower()
            for line in open(sys.argv[3]) if line.strip() and not line.startswith("#")}
solvers = {"osqp", "cvxopt", "ecos", "highspy", "clarabel", "scs", "daqp", "proxsuite", "piqp", "qpalm", "qpax",
           "quadprog", "qpswift", "qtqp", "kvxopt", "sip-qp-python", "pyqpmad", "hpipm-python", "jax", "jaxlib",
           "ml-dtypes", "opt-einsum", "qdldl", "pdhcg"}
for name, version in sorted(want.items()):
    if name in torch or name in have or name in solvers or name.startswith("nvidia-") or name == "triton":
        continue
    print(f"{name}=={version}")
EOF
echo "carrying $(wc -l < "$tmp/carry.txt") packages (+ dncsim)"
while read -r req; do
    if ! "$python" -m pip download --quiet --no-deps "${target[@]}" -d "$dest" "$req" 2>/dev/null; then
        echo "no wheel for $req: building one (pure Python)"
        "$python" -m pip wheel --quiet --no-deps -w "$dest" "$req"
    fi
done < "$tmp/carry.txt"
"$python" -m pip wheel --quiet --no-deps -w "$dest" "$root"
echo "carried: $(ls "$dest" | wc -l) wheels, $(du -sm "$dest" | cut -f1) MiB in $dest"
