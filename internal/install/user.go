package install

import (
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/conf"
	"golang.org/x/sys/unix"
)

// User is a user that exists only inside a root: its lines in the root's
// etc/passwd, etc/group (a group of its own name and id) and etc/shadow,
// and its home, the user's.
type User struct {
	Name  string
	UID   int    // -1: the first id from 1000 that neither file uses
	Home  string // "": /home/NAME
	Shell string // "": /bin/sh
	Gecos string // its full name (finger shows it), ""
	Hash  string // etc/shadow's hash (crypt.SHA512); "": "!", no password login
}

// AddUser adds u to the root at root, which must exist (install builds
// one). The three files are written to temporary names and the home
// made before any file is renamed into place: a failure leaves the files
// as they were (a home made is left). What a tenant planted in the root
// is never followed (see package install).
func AddUser(root string, u User, out io.Writer) error {
	if err := u.check(); err != nil {
		return err
	}
	in, etc, files, err := openEtc(root, out)
	if err != nil {
		return err
	}
	defer in.close()
	defer etc.close()
	users, groups := parseColon(files["passwd"]), parseColon(files["group"])
	if _, ok := users[u.Name]; ok {
		return fmt.Errorf("user %s exists in %s/etc/passwd", u.Name, root)
	}
	if _, ok := groups[u.Name]; ok {
		return fmt.Errorf("a group %s exists in %s/etc/group", u.Name, root)
	}
	used := map[string]bool{}
	for _, m := range []map[string][]string{users, groups} {
		for _, f := range m {
			if len(f) > 2 {
				used[f[2]] = true
			}
		}
	}
	if u.UID < 0 {
		for u.UID = 1000; used[strconv.Itoa(u.UID)]; u.UID++ {
		}
	} else if used[strconv.Itoa(u.UID)] {
		return fmt.Errorf("id %d is taken in %s/etc/passwd or etc/group", u.UID, root)
	}
	if u.UID >= conf.UserRange {
		return fmt.Errorf("uid %d: a root's ids are below %d (what isolate=user maps)", u.UID, conf.UserRange)
	}
	if u.Home == "" {
		u.Home = "/home/" + u.Name
	}
	if u.Shell == "" {
		u.Shell = "/bin/sh"
	}
	if u.Hash == "" {
		u.Hash = "!"
	}
	id := strconv.Itoa(u.UID)
	days := strconv.FormatInt(time.Now().Unix()/86400, 10)
	staged, err := in.stageEtc(etc, files, map[string]string{
		"passwd": u.Name + ":x:" + id + ":" + id + ":" + u.Gecos + ":" + u.Home + ":" + u.Shell,
		"group":  u.Name + ":x:" + id + ":",
		"shadow": u.Name + ":" + u.Hash + ":" + days + ":0:99999:7:::",
	}, "")
	if err != nil {
		return err
	}
	if err := in.home(u.Home, u.UID); err != nil {
		for _, s := range staged {
			s.abort()
		}
		return err
	}
	return commitAll(staged...)
}

// DelUser removes name's lines from the root's etc/passwd and
// etc/shadow, the group of its name from etc/group, and its
// name from the other groups' members. Its home and files are kept.
func DelUser(root, name string, out io.Writer) error {
	if err := checkUserName(name); err != nil {
		return err
	}
	in, etc, files, err := openEtc(root, out)
	if err != nil {
		return err
	}
	defer in.close()
	defer etc.close()
	user, ok := parseColon(files["passwd"])[name]
	if !ok {
		return fmt.Errorf("user %s is not in %s/etc/passwd", name, root)
	}
	staged, err := in.stageEtc(etc, files, nil, name)
	if err != nil {
		return err
	}
	if err := commitAll(staged...); err != nil {
		return err
	}
	if len(user) > 5 {
		fmt.Fprintf(out, "kept %s: the home of %s, with its files (remove it yourself when it holds nothing to keep)\n", in.show(user[5]), name)
	}
	return nil
}

func (u *User) check() error {
	switch {
	case checkUserName(u.Name) != nil:
		return checkUserName(u.Name)
	case u.Home != "" && checkPath(u.Home) != nil:
		return fmt.Errorf("home %v", checkPath(u.Home))
	case u.Shell != "" && checkPath(u.Shell) != nil:
		return fmt.Errorf("shell %v", checkPath(u.Shell))
	case strings.ContainsAny(u.Hash, ":\n"):
		return errors.New("a hash holds no ':' and no line break")
	case strings.ContainsAny(u.Gecos, ":\n\x00") || len(u.Gecos) > 256:
		return errors.New("a full name holds no ':' and no line break, and at most 256 bytes")
	}
	return nil
}

// checkUserName applies Debian adduser's default rule (NAME_REGEX).
func checkUserName(s string) error {
	ok := s != "" && len(s) <= 32 && s[0] >= 'a' && s[0] <= 'z'
	for _, c := range s {
		ok = ok && (c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_')
	}
	if !ok {
		return fmt.Errorf("user %q: a name is a lower-case letter, then lower-case letters, digits, '-' and '_' (at most 32)", s)
	}
	return nil
}

// openEtc opens an existing root and its etc/, and reads etc/passwd,
// etc/group and etc/shadow ("" for one that is missing).
func openEtc(root string, out io.Writer) (*inst, dir, map[string]string, error) {
	if d, err := chroot.Open(root); err != nil {
		return nil, dir{fd: -1}, nil, fmt.Errorf("%v: virtuald would refuse this root (ipwatchctl install builds one)", err)
	} else {
		d.Close()
	}
	in := &inst{root: root, out: out, placed: map[string]bool{}, said: map[string]bool{}}
	if err := in.openRoot(); err != nil {
		return nil, dir{fd: -1}, nil, err
	}
	etc, err := in.reopen("/etc")
	if err != nil {
		in.close()
		return nil, etc, nil, err
	}
	files := map[string]string{}
	for _, f := range []string{"passwd", "group", "shadow"} {
		if files[f], err = in.readSmall(etc, f); err != nil {
			etc.close()
			in.close()
			return nil, etc, nil, err
		}
	}
	return in, etc, files, nil
}

// stageEtc stages etc/passwd, etc/group and etc/shadow: with add's line
// appended to each, or without the lines of user del (and del in no
// group's members).
func (in *inst) stageEtc(etc dir, files, add map[string]string, del string) ([]*staged, error) {
	var staged []*staged
	for _, f := range []string{"passwd", "group", "shadow"} {
		lines := linesOf(files[f])
		if line, ok := add[f]; ok {
			lines = append(lines, line)
			in.change("write %q to %s", strings.SplitN(line, ":", 2)[0]+":...", in.show("/etc/"+f))
		}
		if del != "" {
			lines = withoutUser(lines, del, f == "group")
			in.change("remove %s from %s", del, in.show("/etc/"+f))
		}
		mode := uint32(0o644)
		if f == "shadow" {
			mode = 0o640 // pam_unix reads it as root
		}
		s, err := in.stageLines(etc, f, mode, lines)
		if err != nil {
			for _, s := range staged {
				s.abort()
			}
			return nil, err
		}
		staged = append(staged, s)
	}
	return staged, nil
}

// withoutUser drops name's line and, in etc/group, takes name out of
// every group's members.
func withoutUser(lines []string, name string, group bool) []string {
	var kept []string
	for _, l := range lines {
		f := strings.Split(l, ":")
		if f[0] == name {
			continue
		}
		if group && len(f) == 4 && f[3] != "" {
			var members []string
			for _, m := range strings.Split(f[3], ",") {
				if m != name {
					members = append(members, m)
				}
			}
			f[3] = strings.Join(members, ",")
			l = strings.Join(f, ":")
		}
		kept = append(kept, l)
	}
	return kept
}

// parseColon indexes a colon-separated file by its first field.
func parseColon(text string) map[string][]string {
	m := map[string][]string{}
	for l := range strings.SplitSeq(text, "\n") {
		if f := strings.Split(l, ":"); f[0] != "" {
			m[f[0]] = f
		}
	}
	return m
}

// home makes the directory p (inside the root), the user's, mode 0700
// (Debian 12's), in a parent of root's that nobody else can write: the
// new directory cannot be swapped between its making and its chown. A
// home that exists is kept as it is.
func (in *inst) home(p string, uid int) error {
	parent, err := in.reopen(path.Dir(p))
	if err != nil {
		return err
	}
	defer parent.close()
	name := path.Base(p)
	var st unix.Stat_t
	if err := unix.Fstatat(parent.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return in.inTheWay(parent, name, "a home directory", unix.EEXIST)
		}
		fmt.Fprintf(in.out, "keep %s: it exists (owned by uid %d)\n", in.show(p), st.Uid)
		return nil
	}
	in.change("create directory %s, uid %d's", in.show(p), uid)
	if err := unix.Mkdirat(parent.fd, name, 0o700); err != nil {
		return fmt.Errorf("%s: %w", in.show(p), err)
	}
	if err := unix.Fchownat(parent.fd, name, uid, uid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: %w", in.show(p), err)
	}
	return unix.Fchmodat(parent.fd, name, 0o700, 0)
}
