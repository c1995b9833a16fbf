# popa3d: Debian's popa3d (package popa3d), POP3 for the root's own users:
# it checks each login with PAM and reads /var/mail/USER as that user. It
# does its unprivileged work as the root's user popa3d, chrooted into the
# empty /var/lib/popa3d. Start it as root (no user=). The users:
# ipwatchctl adduser ROOT NAME; their mail: /var/mail/NAME, theirs.
about Debian's popa3d (package popa3d): POP3 with PAM logins against the root's own users, mail in /var/mail
inetd pop3 stream tcp wait root /usr/sbin/virtuald virtuald -accept CONF /usr/sbin/popa3d
include pam
program /usr/sbin/popa3d
dir /var 0755
dir /var/lib 0755
dir /var/lib/popa3d 0755
dir /var/mail 0755
user popa3d 101 101 /var/lib/popa3d /usr/sbin/nologin
file /etc/pam.d/popa3d 0644
	auth	required	pam_unix.so
	account	required	pam_unix.so
