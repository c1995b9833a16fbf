// Package dist holds what the project ships besides its programs: the
// ipwatchd unit, the examples, and the Debian package's configuration and
// maintainer scripts (debian/, nfpm.yaml). Its tests build the package with
// `make deb` and check it: contents, control fields, lintian, and a real
// dpkg install, remove and purge in a private mount namespace.
package dist
