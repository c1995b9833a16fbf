# tftpd: Debian's in.tftpd (package tftpd-hpa), serving /srv/tftp as the
# root's own user tftp, as Debian runs it. Under inetd's "wait" it stays
# for 900 s after its last datagram (-t to change): a changed conf entry
# reaches it only once it has exited.
about Debian's in.tftpd (package tftpd-hpa): serves /srv/tftp as the root's user tftp (in.tftpd -s -u tftp /srv/tftp)
inetd ADDRESS:tftp dgram udp wait root /usr/sbin/virtuald virtuald CONF /usr/sbin/in.tftpd -s -u tftp /srv/tftp
include base
program /usr/sbin/in.tftpd
dir /srv 0755
dir /srv/tftp 0755
user tftp 100 100 /srv/tftp /usr/sbin/nologin
