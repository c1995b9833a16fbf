#!/bin/sh
# Builds virtuald-init for amd64, and for arm64 where its cross compiler
# (Debian's gcc-aarch64-linux-gnu) is installed: static, no C library.
# On amd64 the same binary is virtuald's front (init/front.c, which
# includes init.c), installed as virtuald; arm64 has virtuald-init alone.
set -eu
cd "$(dirname "$0")/.."
flags="-static -nostdlib -ffreestanding -fno-ident -fno-stack-protector -fno-pie -no-pie -Os -Wall -Werror
	-fno-asynchronous-unwind-tables -fno-unwind-tables -Wl,--build-id=none -s"
gcc $flags -o init_amd64.elf init/front.c
if command -v aarch64-linux-gnu-gcc >/dev/null; then
	aarch64-linux-gnu-gcc $flags -o init_arm64.elf init/init.c
fi
