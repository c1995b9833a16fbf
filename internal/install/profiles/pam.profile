# pam: PAM with pam_unix against the root's own etc/shadow, for services
# that log their users in with PAM (ftpd, popa3d). libpam loads its
# modules with dlopen: no ELF header names them. Every service without a
# file of its own in etc/pam.d/ is denied (etc/pam.d/other).
about PAM for the root's own users: pam_unix against the root's etc/shadow, everything else denied
include base
module security/pam_unix.so
module security/pam_permit.so
module security/pam_deny.so
file /etc/pam.d/other 0644
	auth	required	pam_deny.so
	account	required	pam_deny.so
	password	required	pam_deny.so
	session	required	pam_deny.so
