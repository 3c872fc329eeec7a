#!/usr/bin/env bash
# Install edgechat with a llama.cpp build for the hardware it finds.
#
#   packaging/install.sh [--dry-run] [--cpu] [--prefix DIR] [--source DIR|SPEC]
#
# Debian, Ubuntu, Raspberry Pi OS and macOS. Checks Python (>= 3.10) and a C/C++
# compiler, makes an isolated environment (pipx when present, else a venv under
# PREFIX), and installs edgechat with llama-cpp-python built for: CUDA when nvcc is
# present, Metal on Apple Silicon, Vulkan where its SDK is, OpenBLAS where the
# library is, plain CPU otherwise; native ARM flags on a Raspberry Pi. Safe to re-run:
# the environment is reused and pip only rebuilds when the flags change.
#
# --dry-run prints what it would do and changes nothing. --cpu forces a CPU build.
# Host facts can be simulated (tests): EDGECHAT_UNAME_S, EDGECHAT_UNAME_M, and
# EDGECHAT_SYSROOT, a folder standing for / when looking for /etc/os-release,
# /proc/device-tree/model, /dev/nvidia0 and OpenBLAS headers.
set -euo pipefail

DRY_RUN=0
FORCE_CPU=0
PREFIX="${XDG_DATA_HOME:-$HOME/.local/share}/edgechat"
SOURCE="edgechat[starter]"

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --cpu) FORCE_CPU=1 ;;
        --prefix) PREFIX="$2"; shift ;;
        --source) SOURCE="$2"; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '%s\n' "$*"; }
run() {
    if [ "$DRY_RUN" = 1 ]; then
        say "would run: $*"
    else
        say "+ $*"
        "$@"
    fi
}
have() { command -v "$1" >/dev/null 2>&1; }

UNAME_S="${EDGECHAT_UNAME_S:-$(uname -s)}"
UNAME_M="${EDGECHAT_UNAME_M:-$(uname -m)}"
ROOT="${EDGECHAT_SYSROOT:-}"
DEVICE_TREE="$ROOT/proc/device-tree/model"
OS_RELEASE="$ROOT/etc/os-release"

# -- the host ---------------------------------------------------------------------------
OS_NAME="$UNAME_S"
if [ -r "$OS_RELEASE" ]; then
    OS_NAME="$(. "$OS_RELEASE" && printf '%s' "${PRETTY_NAME:-$NAME}")"
elif [ "$UNAME_S" = Darwin ]; then
    OS_NAME="macOS"
fi
BOARD=""
if [ -r "$DEVICE_TREE" ]; then
    BOARD="$(tr -d '\0' < "$DEVICE_TREE")"
fi
say "host: $OS_NAME, $UNAME_M${BOARD:+, $BOARD}"

# -- Python and a compiler ----------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
if ! have "$PYTHON"; then
    say "install.sh: no python3 found. Install it first:" >&2
    say "  sudo apt install python3 python3-venv python3-dev    (Debian, Ubuntu, Pi OS)" >&2
    say "  brew install python                                    (macOS)" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    say "install.sh: edgechat needs Python 3.10 or newer; $("$PYTHON" -V 2>&1) is too old" >&2
    exit 1
fi
if ! have cc && ! have gcc && ! have clang; then
    say "install.sh: llama-cpp-python is compiled here and needs a C/C++ compiler:" >&2
    say "  sudo apt install build-essential cmake    (Debian, Ubuntu, Pi OS)" >&2
    say "  xcode-select --install                    (macOS)" >&2
    exit 1
fi

# -- the llama.cpp build --------------------------------------------------------------------
BACKEND=cpu
CMAKE_ARGS_CHOSEN=""
if [ "$FORCE_CPU" = 1 ]; then
    BACKEND=cpu
elif [ "$UNAME_S" = Darwin ] && [ "$UNAME_M" = arm64 ]; then
    BACKEND=metal
    CMAKE_ARGS_CHOSEN="-DGGML_METAL=on"
elif have nvcc && { [ -e "$ROOT/dev/nvidia0" ] || nvidia-smi -L >/dev/null 2>&1; }; then
    BACKEND=cuda
    CMAKE_ARGS_CHOSEN="-DGGML_CUDA=on"
elif have glslc && { have vulkaninfo || [ -n "${VULKAN_SDK:-}" ]; }; then
    BACKEND=vulkan
    CMAKE_ARGS_CHOSEN="-DGGML_VULKAN=on"
elif [ -e "$ROOT/usr/include/openblas/cblas.h" ] || [ -n "${OPENBLAS_HOME:-}" ] \
    || ls "$ROOT"/usr/include/*-linux-gnu/openblas-pthread/cblas.h >/dev/null 2>&1; then
    BACKEND=openblas
    CMAKE_ARGS_CHOSEN="-DGGML_BLAS=on -DGGML_BLAS_VENDOR=OpenBLAS"
fi
case "$BOARD" in
    *"Raspberry Pi 5"*) CMAKE_ARGS_CHOSEN="$CMAKE_ARGS_CHOSEN -DGGML_NATIVE=on -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" ;;
    *"Raspberry Pi"*) CMAKE_ARGS_CHOSEN="$CMAKE_ARGS_CHOSEN -DGGML_NATIVE=on" ;;
esac
# An x86 CPU with AVX512-FP16 (Intel Xeon Sapphire Rapids and later): -march=native turns it
# on, and llama.cpp's flash attention (on by default on a CPU) then writes at two thirds of
# the speed deep in a chat (SmolLM2 on two cores, 1,500 tokens in: 34.9 tok/s against 54.9
# built for the same features by name; 93.9 against 87.3 at the start). It also compiles
# the AMX kernels that crash on these CPUs in GCC 11/12 builds (llama.cpp #20824). So the
# features are named, without those two.
CPU_FLAGS=" $({ grep -m1 '^flags' "$ROOT/proc/cpuinfo" 2>/dev/null || true; } | cut -d: -f2) "
if [ "$UNAME_M" = x86_64 ] && printf '%s' "$CPU_FLAGS" | grep -qw avx512_fp16; then
    CMAKE_ARGS_CHOSEN="$CMAKE_ARGS_CHOSEN -DGGML_NATIVE=OFF"
    for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
        avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
        if printf '%s' "$CPU_FLAGS" | grep -qw -- "${pair%%:*}"; then
            CMAKE_ARGS_CHOSEN="$CMAKE_ARGS_CHOSEN -DGGML_${pair#*:}=ON"
        fi
    done
    say "note: AVX512-FP16 CPU: llama.cpp is built for its features by name, not -march=native"
fi
CMAKE_ARGS_CHOSEN="$(printf '%s' "$CMAKE_ARGS_CHOSEN" | sed 's/^ *//')"
if [ "$BACKEND" != cuda ] && have nvcc && [ "$FORCE_CPU" = 0 ]; then
    say "note: nvcc is here but no NVIDIA GPU answers, so no CUDA build"
fi
say "llama.cpp backend: $BACKEND"
say "CMAKE_ARGS=${CMAKE_ARGS_CHOSEN:-(none: plain CPU build)}"

# -- the environment -------------------------------------------------------------------------
if have pipx; then
    say "environment: pipx"
    run env CMAKE_ARGS="$CMAKE_ARGS_CHOSEN" pipx install --force "$SOURCE"
else
    VENV="$PREFIX/venv"
    say "environment: $VENV"
    if [ ! -x "$VENV/bin/python" ]; then
        run "$PYTHON" -m venv "$VENV"
    else
        say "reusing $VENV"
    fi
    run "$VENV/bin/pip" install --upgrade pip
    # A changed backend needs llama-cpp-python rebuilt; pip reuses a cached wheel otherwise.
    STAMP="$PREFIX/llama-cmake-args"
    REBUILD=""
    if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$CMAKE_ARGS_CHOSEN" ]; then
        REBUILD="--force-reinstall --no-cache-dir"
    fi
    run env CMAKE_ARGS="$CMAKE_ARGS_CHOSEN" "$VENV/bin/pip" install $REBUILD "llama-cpp-python>=0.3.36,<0.4"
    run "$VENV/bin/pip" install "$SOURCE"
    if [ "$DRY_RUN" = 0 ]; then
        printf '%s' "$CMAKE_ARGS_CHOSEN" > "$STAMP"
    fi
    run mkdir -p "$HOME/.local/bin"
    run ln -sf "$VENV/bin/edgechat" "$HOME/.local/bin/edgechat"
fi
say "done: run \`edgechat\` (make sure ~/.local/bin is on PATH), and \`edgechat doctor\` to check"
