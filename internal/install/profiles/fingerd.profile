# fingerd: Debian's in.fingerd (package fingerd), which runs
# /usr/bin/finger itself to answer from the root's etc/passwd. It needs no
# root: give its entry user=nobody.
about Debian's in.fingerd (package fingerd) with /usr/bin/finger: answers from the root's users (give the entry user=nobody)
inetd finger stream tcp nowait root /usr/sbin/virtuald virtuald CONF /usr/sbin/in.fingerd
include base
program /usr/sbin/in.fingerd
program /usr/bin/finger
