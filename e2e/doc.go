// Package e2e runs Debian's own classic inetd services (in.ftpd, which
// authenticates through PAM; in.tftpd over UDP; in.fingerd, which runs
// finger) in roots built with `ipwatchctl install`, behind a real
// openbsd-inetd, virtuald and ipwatchd in a private network namespace,
// and talks to them with real clients (curl, tftp, finger): what an
// administrator does on the first day, as a test. It holds only tests.
//
// Its roots are the worked example of what a root needs beyond what
// install can know (the programs' closures): see writeTenant.
package e2e
