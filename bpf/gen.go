package bpf

// The object is built for the two byte orders (bpfel, bpfeb) rather than
// per GOARCH: the program reads no registers (pt_regs), only BTF-typed
// tracepoint arguments relocated by CO-RE, so one little-endian object
// serves amd64, arm64, riscv64 and the rest alike, and the big-endian one
// s390x and friends; every Linux GOARCH builds. The objects and their Go
// bindings are committed, so `make build` needs no clang: only `make
// generate` (after changing connacct.c) does, with Debian's clang, llvm
// (llvm-strip) and libbpf-dev (the bpf/*.h helper headers).
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel,bpfeb -type key -type pin_meta connacct connacct.c -- -O2 -g -Wall -Werror
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel,bpfeb -type shed_key -type shed_bucket shed shed.c -- -O2 -g -Wall -Werror
