//go:build !amd64

package enter

// No virtuald-init is built for this architecture (make generate builds
// one where a cross compiler is installed): every isolated service is
// refused, saying so.
var initELF []byte
