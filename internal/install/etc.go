package install

import (
	"fmt"
	"os"
	"os/user"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// devices are the nodes a classic service opens, with Linux's numbers
// (Documentation/admin-guide/devices.txt).
var devices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3},
	{"zero", 1, 5},
	{"urandom", 1, 9},
}

// devices makes dev/ (root's, mode 0755: what ipwatchd's log relay needs
// to put dev/log in) and its character devices, mode 0666. A regular
// file in a device's place (a service running as root created it) is
// replaced; a link or a directory there is refused.
func (in *inst) devices() error {
	root, err := in.reopen("/")
	if err != nil {
		return err
	}
	defer root.close()
	dev, err := in.subdir(root, "dev")
	if err != nil {
		return err
	}
	defer dev.close()
	for _, n := range devices {
		rdev := unix.Mkdev(n.major, n.minor)
		p := in.show(path.Join("/dev", n.name))
		if dev.fd < 0 {
			in.change("make device %s (%d:%d)", p, n.major, n.minor)
			continue
		}
		var st unix.Stat_t
		err := unix.Fstatat(dev.fd, n.name, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err == unix.ENOENT:
			in.change("make device %s (%d:%d)", p, n.major, n.minor)
		case err != nil:
			return fmt.Errorf("%s: %w", p, err)
		case st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == rdev && st.Mode&0o7777 == 0o666 && st.Uid == 0:
			continue
		case st.Mode&unix.S_IFMT == unix.S_IFLNK || st.Mode&unix.S_IFMT == unix.S_IFDIR:
			return in.inTheWay(dev, n.name, "a device", unix.EEXIST)
		default:
			in.change("replace %s (%s) with the device %d:%d", p, Kind(st.Mode), n.major, n.minor)
		}
		if in.dry {
			continue
		}
		tmp := tempName(n.name)
		err = unix.Mknodat(dev.fd, tmp, unix.S_IFCHR|0o600, int(rdev))
		if err == nil {
			err = unix.Fchmodat(dev.fd, tmp, 0o666, 0)
		}
		if err == nil {
			err = unix.Renameat(dev.fd, tmp, dev.fd, n.name)
		}
		if err != nil {
			unix.Unlinkat(dev.fd, tmp, 0)
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// user gives the root the passwd line of the host's user name (password
// "x", home "/", no login shell) and the group line of its primary
// group, so that a service can name its own user. Other lines of the
// root's files are kept; a line for the same name is replaced.
func (in *inst) user(name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("user %s does not exist on this host", name)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return fmt.Errorf("the primary group %s of user %s does not exist on this host", u.Gid, name)
	}
	root, err := in.reopen("/")
	if err != nil {
		return err
	}
	defer root.close()
	etc, err := in.subdir(root, "etc")
	if err != nil {
		return err
	}
	defer etc.close()
	return in.userLines(etc, u.Username, fmt.Sprintf("%s:x:%s:%s::/:/usr/sbin/nologin", u.Username, u.Uid, u.Gid),
		g.Name, fmt.Sprintf("%s:x:%s:", g.Name, g.Gid))
}

// userLines puts a user's passwd line and its group's line in etc. Both
// files are read and written to temporary names before either is
// renamed into place: a root gets both lines or neither (a link or FIFO
// a tenant put at etc/group stops install before etc/passwd changes).
func (in *inst) userLines(etc dir, user, passwdLine, group, groupLine string) error {
	passwd, err := in.etcLine(etc, "passwd", user, passwdLine)
	if err != nil {
		return err
	}
	groupFile, err := in.etcLine(etc, "group", group, groupLine)
	if err != nil {
		passwd.abort()
		return err
	}
	return commitAll(passwd, groupFile)
}

// etcLine stages the colon-separated file file of etc with line for name
// in it (replacing the line of that name): its change is reported and,
// unless in a dry run, its new content written to a temporary name, for
// the caller to commit or abort.
func (in *inst) etcLine(etc dir, file, name, line string) (*staged, error) {
	var lines []string
	if etc.fd >= 0 {
		old, err := in.readSmall(etc, file)
		if err != nil {
			return nil, err
		}
		lines = linesOf(old)
	}
	found := false
	for i, l := range lines {
		if n, _, _ := strings.Cut(l, ":"); n == name {
			if l == line {
				return nil, nil
			}
			lines[i], found = line, true
		}
	}
	if !found {
		lines = append(lines, line)
	}
	in.change("write %q to %s", line, in.show(path.Join(etc.path, file)))
	if in.dry {
		return nil, nil
	}
	return in.stageLines(etc, file, 0o644, lines)
}

// linesOf splits a text file into its lines.
func linesOf(text string) []string {
	if text == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(text, "\n"), "\n")
}

// stageLines stages etc/file holding lines, root's with mode.
func (in *inst) stageLines(etc dir, file string, mode uint32, lines []string) (*staged, error) {
	text := strings.Join(lines, "\n")
	if text != "" {
		text += "\n"
	}
	return in.stage(etc, file, mode, func(f *os.File) error {
		_, err := f.WriteString(text)
		return err
	})
}

// readSmall reads the regular file name in d ("" when it is missing),
// refusing anything else and more than maxEtcFile bytes.
func (in *inst) readSmall(d dir, name string) (string, error) {
	var st unix.Stat_t
	switch err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == unix.ENOENT:
		return "", nil
	case err != nil:
		return "", err
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return "", in.inTheWay(d, name, "a regular file", unix.EEXIST)
	case st.Size > maxEtcFile:
		return "", fmt.Errorf("%s is %d bytes, more than an etc file install edits (%d)", in.show(path.Join(d.path, name)), st.Size, maxEtcFile)
	}
	fd, err := unix.Openat2(d.fd, name, openHow(unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY))
	if err != nil {
		return "", in.inTheWay(d, name, "a regular file", err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	b := make([]byte, maxEtcFile+1)
	n, _ := f.ReadAt(b, 0)
	if n > maxEtcFile {
		return "", fmt.Errorf("%s grew past %d bytes", in.show(path.Join(d.path, name)), maxEtcFile)
	}
	return string(b[:n]), nil
}
