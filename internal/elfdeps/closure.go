package elfdeps

import (
	"path"
)

// MaxObjects bounds the objects Resolve follows: a tenant's root can hold
// any number of libraries naming each other, and a real program needs
// far fewer (a PAM-linked FTP server: about 30).
const MaxObjects = 512

// Object is an ELF object the loader maps for a program.
type Object struct {
	Path string // where the loader finds it (for the program: the path given)
	Info *Info
	// rpaths are the DT_RPATH directories of the objects that loaded
	// this one, which the loader searches for its libraries too (unless
	// it has a DT_RUNPATH).
	rpaths []string
}

// Lack is a library the loader will not find, and the first object that
// needs it.
type Lack struct {
	Name     string
	NeededBy string
}

// Closure is everything a dynamic program needs to start.
type Closure struct {
	Interp        string   // PT_INTERP, "" for a static program
	InterpMissing bool     // the interpreter is not there
	Objects       []Object // the program, then each library in the order the loader finds them
	Missing       []Lack   // libraries the loader will not find
	Truncated     bool     // more than MaxObjects objects: the rest was not followed
}

// Resolve finds the closure of the ELF program at program under fs as
// the dynamic loader would: each object's DT_NEEDED in breadth-first
// order, each name looked up once (the loader reuses an object it has
// already mapped), through RPATH (with the loaders' chain), LD_LIBRARY_PATH,
// RUNPATH (with $ORIGIN), fs's own /etc/ld.so.cache and the default
// directories, skipping a file that is not an ELF object of the
// program's class and machine. Every read is of a regular file, bounded.
// It fails only when the program itself cannot be read as ELF.
func Resolve(fs FS, program, ldLibraryPath string) (*Closure, error) {
	info, err := readInfo(fs, program)
	if err != nil {
		return nil, err
	}
	c := &Closure{Interp: info.Interp, Objects: []Object{{Path: program, Info: info}}}
	seen := map[string]bool{}
	if info.Interp != "" {
		c.InterpMissing = !fs.Exists(info.Interp)
		// The interpreter is mapped first, and libc names it by its
		// soname: it is never searched for.
		seen[path.Base(info.Interp)] = true
	}
	s := newSearch(fs, ldLibraryPath)
	// found caches the ELF headers read while judging candidates, so that
	// the one accepted is not read twice.
	var found *Info
	sameArch := func(p string) bool {
		i, err := readInfo(fs, p)
		if err != nil || i.Class != info.Class || i.Machine != info.Machine {
			return false
		}
		found = i
		return true
	}
	for next := 0; next < len(c.Objects); next++ {
		o := c.Objects[next]
		before := o.Info.searchDirs(o.Path, o.rpaths, s)
		rpaths := o.rpaths
		if o.Info.RPath {
			rpaths = append(expand(o.Info.RunPath, o.Path), o.rpaths...)
		}
		for _, name := range o.Info.Needed {
			if seen[name] {
				continue
			}
			seen[name] = true
			p, ok := s.find(name, before, sameArch)
			if !ok {
				c.Missing = append(c.Missing, Lack{Name: name, NeededBy: o.Path})
				continue
			}
			if len(c.Objects) == MaxObjects {
				c.Truncated = true
				return c, nil
			}
			c.Objects = append(c.Objects, Object{Path: p, Info: found, rpaths: rpaths})
		}
	}
	return c, nil
}

func readInfo(fs FS, p string) (*Info, error) {
	f, err := fs.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}
