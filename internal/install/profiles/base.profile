# base: what every root for a classic service needs besides its programs,
# included by the other profiles. Files are written only where the root
# has none: an admin's edits are kept.
about what every root needs: dev/ (null, zero, urandom, the log relay's dev/log), root's user, name lookups in files, localhost
dev
user root 0 0 /root /usr/sbin/nologin
# getpwnam, getspnam and gethostbyaddr read the root's own files (glibc's
# files backend is built into libc.so.6). Without "hosts: files" ftpd
# logs "connection from " with no address.
file /etc/nsswitch.conf 0644
	passwd: files
	group: files
	shadow: files
	hosts: files
file /etc/hosts 0644
	127.0.0.1	localhost
	::1	localhost ip6-localhost ip6-loopback
