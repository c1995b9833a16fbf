package install

import (
	"fmt"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// profile makes a profile's directories, files and users in the root.
// A file the root already has is kept as it is (the admin may have
// edited it): install says when it differs from the profile's.
func (in *inst) profile(p *Profile) error {
	for _, d := range p.Dirs {
		if err := in.profileDir(d); err != nil {
			return err
		}
	}
	for _, f := range p.Files {
		if err := in.profileFile(p.Name, f); err != nil {
			return err
		}
	}
	for _, u := range p.Users {
		etc, err := in.reopen("/etc")
		if err != nil {
			return err
		}
		if has, err := in.hasUser(etc, u.Name); has || err != nil {
			etc.close()
			if err != nil {
				return err
			}
			continue
		}
		err = in.userLines(etc, u.Name, fmt.Sprintf("%s:x:%d:%d::%s:%s", u.Name, u.UID, u.GID, u.Home, u.Shell),
			u.Name, fmt.Sprintf("%s:x:%d:", u.Name, u.GID))
		etc.close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (in *inst) profileDir(d ProfileDir) error {
	dir, err := in.reopen(d.Path)
	if err != nil {
		return err
	}
	defer dir.close()
	if dir.fd < 0 {
		return nil // a dry run, below a directory not made yet
	}
	var st unix.Stat_t
	if err := unix.Fstat(dir.fd, &st); err != nil {
		return err
	}
	if st.Mode&0o7777 != d.Mode {
		in.change("set the mode of %s to %04o", in.show(d.Path), d.Mode)
		if !in.dry {
			return unix.Fchmod(dir.fd, d.Mode)
		}
	}
	return nil
}

func (in *inst) profileFile(profile string, f ProfileFile) error {
	dir, err := in.reopen(path.Dir(f.Path))
	if err != nil {
		return err
	}
	defer dir.close()
	name := path.Base(f.Path)
	if dir.fd >= 0 {
		var st unix.Stat_t
		if unix.Fstatat(dir.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			old, err := in.readSmall(dir, name)
			if err != nil {
				return err
			}
			if old != f.Content {
				fmt.Fprintf(in.out, "keep %s: it differs from profile %s's (remove it to get the profile's)\n", in.show(f.Path), profile)
			}
			return nil
		}
	}
	in.change("write %s (profile %s)", in.show(f.Path), profile)
	if in.dry {
		return nil
	}
	return in.write(dir, name, f.Mode, func(w *os.File) error {
		_, err := w.WriteString(f.Content)
		return err
	})
}

// hasUser says whether the root's etc/passwd has a line for name.
func (in *inst) hasUser(etc dir, name string) (bool, error) {
	if etc.fd < 0 {
		return false, nil
	}
	old, err := in.readSmall(etc, "passwd")
	_, has := parseColon(old)[name]
	return has, err
}
