package install

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// A Profile is what one service needs in its root that no ELF header
// says, as data (jailkit's jk_init sections are the model): the programs
// it runs itself, the modules it loads with dlopen, its configuration
// files, its system users, the directories it serves, devices. The
// project's profiles are embedded (profiles/*.profile); an admin's in
// ProfilesDir take precedence by name.
//
// A profile file holds one directive a line ('#' starts a comment line):
//
//	about TEXT                      what the profile is for (profile list shows it)
//	inetd LINE                      the service's inetd.conf line, as profile list shows it
//	include NAME                    everything profile NAME has (base: what every root needs)
//	program PATH                    a host program, with its interpreter and libraries
//	module NAME                     a library loaded with dlopen (security/pam_unix.so),
//	                                found in the host's library directories
//	dev                             dev/null, dev/zero, dev/urandom and dev/ for the log relay
//	dir PATH MODE                   a directory, root's (MODE not writable by group or others)
//	file PATH MODE                  a file, root's, made when missing, its lines below,
//	<TAB>LINE                       each after one tab (a lone tab: an empty line)
//	user NAME UID GID HOME SHELL    a system user of the service: its passwd and group
//	                                lines, added when the root has no user of that name
type Profile struct {
	Name, Source, About string
	Inetd               string // its inetd.conf line (CONF for the conf file)
	Includes            []string
	Programs            []string
	Modules             []string
	Dev                 bool
	Dirs                []ProfileDir
	Files               []ProfileFile
	Users               []ProfileUser
}

// ProfileDir is a directory a profile makes.
type ProfileDir struct {
	Path string
	Mode uint32
}

// ProfileFile is a file a profile writes when the root has none there.
type ProfileFile struct {
	Path    string
	Mode    uint32
	Content string
}

// ProfileUser is a system user inside the root: no password, no login.
type ProfileUser struct {
	Name, Home, Shell string
	UID, GID          uint32
}

// ProfilesDir is where an admin's profiles are (NAME.profile).
const ProfilesDir = "/etc/virtuald/profiles"

const maxProfile = 64 << 10 // a profile file read at most

//go:embed profiles/*.profile
var shipped embed.FS

// LoadProfile finds the profile name: a path (it holds a '/'), else
// dir/NAME.profile (dir "": none), else the project's own; with what it
// includes.
func LoadProfile(dir, name string) (*Profile, error) {
	return loadProfile(dir, name, 0)
}

const maxIncludes = 4 // profiles included one in another, at most

func loadProfile(dir, name string, depth int) (*Profile, error) {
	p, err := findProfile(dir, name)
	if err != nil {
		return nil, err
	}
	for _, inc := range p.Includes {
		if depth >= maxIncludes {
			return nil, fmt.Errorf("profile %s: includes nest deeper than %d", name, maxIncludes)
		}
		q, err := loadProfile(dir, inc, depth+1)
		if err != nil {
			return nil, fmt.Errorf("profile %s: %w", name, err)
		}
		p.Programs = append(q.Programs, p.Programs...)
		p.Modules = append(q.Modules, p.Modules...)
		p.Dev = p.Dev || q.Dev
		p.Dirs = append(q.Dirs, p.Dirs...)
		p.Files = append(q.Files, p.Files...)
		p.Users = append(q.Users, p.Users...)
	}
	return p, nil
}

func findProfile(dir, name string) (*Profile, error) {
	if strings.Contains(name, "/") {
		return readProfile(name, strings.TrimSuffix(filepath.Base(name), ".profile"), os.ReadFile)
	}
	if !validName(name) {
		return nil, fmt.Errorf("profile %q: a name has letters, digits, '-' and '_' only", name)
	}
	if dir != "" {
		p, err := readProfile(filepath.Join(dir, name+".profile"), name, os.ReadFile)
		if !errors.Is(err, fs.ErrNotExist) {
			return p, err
		}
	}
	p, err := readProfile("profiles/"+name+".profile", name, shipped.ReadFile)
	if errors.Is(err, fs.ErrNotExist) {
		names, _ := Profiles(dir)
		list := make([]string, len(names))
		for i, p := range names {
			list[i] = p.Name
		}
		return nil, fmt.Errorf("no profile %s (in %s or shipped; there are: %s)", name, dir, strings.Join(list, ", "))
	}
	if p != nil {
		p.Source = "shipped"
	}
	return p, err
}

// Profiles lists every profile by name, an admin's where both have one.
// A profile that does not parse is listed with its error as About.
func Profiles(dir string) ([]*Profile, error) {
	byName := map[string]*Profile{}
	entries, _ := shipped.ReadDir("profiles")
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".profile")
		if p, err := LoadProfile("", name); err == nil {
			byName[name] = p
		}
	}
	own, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range own {
		name, ok := strings.CutSuffix(e.Name(), ".profile")
		if !ok || !validName(name) {
			continue
		}
		p, err := readProfile(filepath.Join(dir, e.Name()), name, os.ReadFile)
		if err != nil {
			p = &Profile{Name: name, Source: filepath.Join(dir, e.Name()), About: "(broken: " + err.Error() + ")"}
		}
		byName[name] = p
	}
	var list []*Profile
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		list = append(list, byName[name])
	}
	return list, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func readProfile(file, name string, read func(string) ([]byte, error)) (*Profile, error) {
	b, err := read(file)
	if err != nil {
		return nil, err
	}
	if len(b) > maxProfile {
		return nil, fmt.Errorf("%s: %d bytes, more than a profile holds (%d)", file, len(b), maxProfile)
	}
	p, err := ParseProfile(file, string(b))
	if p != nil {
		p.Name = name
	}
	return p, err
}

// ParseProfile parses a profile's text; errors name FILE:LINE.
func ParseProfile(file, text string) (*Profile, error) {
	p := &Profile{Source: file}
	var body *ProfileFile // the file whose lines come next
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		at := fmt.Sprintf("%s:%d: ", file, i+1)
		if rest, ok := strings.CutPrefix(line, "\t"); ok {
			if body == nil {
				return nil, errors.New(at + "a line starting with a tab belongs to a file directive, and follows one")
			}
			body.Content += rest + "\n"
			continue
		}
		body = nil
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		argc := map[string]int{"about": -1, "inetd": -1, "include": 1, "program": 1, "module": 1, "dev": 0, "dir": 2, "file": 2, "user": 5}
		want, known := argc[f[0]]
		switch {
		case !known:
			return nil, fmt.Errorf("%sunknown directive %q (about, inetd, include, program, module, dev, dir, file, user)", at, f[0])
		case want >= 0 && len(f)-1 != want:
			return nil, fmt.Errorf("%s%s takes %d fields, not %d", at, f[0], want, len(f)-1)
		}
		var err error
		switch f[0] {
		case "about":
			p.About = strings.Join(f[1:], " ")
		case "inetd":
			p.Inetd = strings.Join(f[1:], " ")
		case "include":
			if !validName(f[1]) {
				err = fmt.Errorf("include %q: a profile's name", f[1])
			}
			p.Includes = append(p.Includes, f[1])
		case "program":
			err = checkPath(f[1])
			p.Programs = append(p.Programs, f[1])
		case "module":
			if f[1] != path.Clean(f[1]) || strings.HasPrefix(f[1], "/") || strings.HasPrefix(f[1], "..") {
				err = fmt.Errorf("module %q: a clean path below a library directory", f[1])
			}
			p.Modules = append(p.Modules, f[1])
		case "dev":
			p.Dev = true
		case "dir":
			var mode uint32
			if err = checkPath(f[1]); err == nil {
				mode, err = parseMode(f[2], 0o7755)
			}
			p.Dirs = append(p.Dirs, ProfileDir{f[1], mode})
		case "file":
			var mode uint32
			if err = checkPath(f[1]); err == nil {
				mode, err = parseMode(f[2], 0o644)
			}
			p.Files = append(p.Files, ProfileFile{Path: f[1], Mode: mode})
			body = &p.Files[len(p.Files)-1]
		case "user":
			uid, uerr := strconv.ParseUint(f[2], 10, 16)
			gid, gerr := strconv.ParseUint(f[3], 10, 16)
			switch {
			case checkUserName(f[1]) != nil:
				err = checkUserName(f[1])
			case uerr != nil:
				err = fmt.Errorf("uid %q: a number below 65536", f[2])
			case gerr != nil:
				err = fmt.Errorf("gid %q: a number below 65536", f[3])
			case checkPath(f[4]) != nil:
				err = checkPath(f[4])
			default:
				err = checkPath(f[5])
			}
			p.Users = append(p.Users, ProfileUser{Name: f[1], UID: uint32(uid), GID: uint32(gid), Home: f[4], Shell: f[5]})
		}
		if err != nil {
			return nil, fmt.Errorf("%s%v", at, err)
		}
	}
	return p, nil
}

func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") || p != path.Clean(p) || p == "/" || strings.ContainsAny(p, ":\x00") {
		return fmt.Errorf("%q: an absolute, clean path below / (no ':')", p)
	}
	return nil
}

// parseMode parses an octal mode, allowing only the bits in allowed.
func parseMode(s string, allowed uint32) (uint32, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || uint32(m)&^allowed != 0 {
		return 0, fmt.Errorf("mode %q: octal, within %04o", s, allowed)
	}
	return uint32(m), nil
}

// libraryDirs are where module names are looked up on the host, in order.
func libraryDirs() []string {
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	return []string{"/usr/lib/" + triplet, "/lib/" + triplet, "/usr/lib64", "/lib64", "/usr/lib", "/lib"}
}

// findModule gives the host path of a module name.
func findModule(name string) (string, error) {
	for _, d := range libraryDirs() {
		p := path.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("module %s is in none of %s on this host (is its package installed?)", name, strings.Join(libraryDirs(), ", "))
}
