# ftpd: Debian's in.ftpd (package ftpd). Start it as root (no user=): it
# checks each login with PAM, then runs as the user who logged in. It
# runs /bin/ls for every listing: without it every listing is empty, with
# no error anywhere. Its users: ipwatchctl adduser ROOT NAME.
about Debian's in.ftpd (package ftpd): PAM logins against the root's own users, listings (/bin/ls), uploads
inetd ftp stream tcp wait root /usr/sbin/virtuald virtuald -accept CONF /usr/sbin/in.ftpd -l
include pam
program /usr/sbin/in.ftpd
program /bin/ls
module security/pam_ftp.so
dir /home 0755
file /etc/pam.d/ftp 0644
	# Anonymous logins through pam_ftp.so (with an ftp user), else the
	# root's etc/shadow.
	auth	sufficient	pam_ftp.so
	auth	required	pam_unix.so
	account	required	pam_unix.so
	session	required	pam_permit.so
