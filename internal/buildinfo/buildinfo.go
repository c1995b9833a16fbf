// Package buildinfo is the version every binary reports (-version,
// ipwatchctl version, ipwatchd's status and metrics). The Makefile stamps
// it from `git describe --tags --always --dirty`, so a binary built from a
// release tag says that tag, and any other says how far past the last tag
// it is and whether its tree was clean. It is a package of its own, with
// nothing imported, so that virtuald's path gains nothing.
package buildinfo

// version is set at link time:
//
//	-ldflags "-X github.com/virtuald/virtuald/internal/buildinfo.version=$(VERSION)"
var version string

// Version is the version the binary was built as, or "dev" when it was
// built without the Makefile (go build, go test).
func Version() string {
	if version == "" {
		return "dev"
	}
	return version
}
