package daemon

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// watcher watches the directories of the files it is given with inotify,
// not the files: editors and deploy tools replace a file by renaming a new
// one over it, which a watch on the old inode never sees.
type watcher struct {
	f *os.File

	mu    sync.Mutex
	dirs  map[int32]string  // watch descriptor -> directory
	wds   map[string]bool   // directories watched
	files map[string]func() // a file's path -> what its change calls
	every map[string]func() // a directory -> what a change to any file in it calls
}

// IN_CLOSE_WRITE, not IN_MODIFY: a file is read once its writer is done
// with it, not half written. A writer that keeps the file open is noticed
// when virtuald finds the daemon's copy stale.
const watchMask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

func newWatcher() (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	return &watcher{
		f:    os.NewFile(uintptr(fd), "inotify"),
		dirs: map[int32]string{}, wds: map[string]bool{}, files: map[string]func(){}, every: map[string]func(){},
	}, nil
}

// addFile calls changed when the file at path changes. A directory that
// does not exist yet is not watched; the file is still reloaded on SIGHUP
// (and a conf file when virtuald finds the daemon's copy stale).
func (w *watcher) addFile(path string, changed func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.files[path] = changed
	w.watchDir(filepath.Dir(path))
}

// addDir calls changed when any file in dir changes.
func (w *watcher) addDir(dir string, changed func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.every[dir] = changed
	w.watchDir(dir)
}

// watchDir adds an inotify watch on dir once; w.mu is held.
func (w *watcher) watchDir(dir string) {
	if w.wds[dir] {
		return
	}
	raw, err := w.f.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		if wd, err := unix.InotifyAddWatch(int(fd), dir, watchMask); err == nil {
			w.dirs[int32(wd)] = dir
			w.wds[dir] = true
		}
	})
}

// run reads the watch's events until ctx ends, which closes the watch.
func (w *watcher) run(ctx context.Context) error {
	context.AfterFunc(ctx, w.close)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameLen := int(ev.Len)
			name := ""
			if nameLen > 0 && off+unix.SizeofInotifyEvent+nameLen <= n {
				b := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+nameLen]
				for len(b) > 0 && b[len(b)-1] == 0 {
					b = b[:len(b)-1]
				}
				name = string(b)
			}
			off += unix.SizeofInotifyEvent + nameLen
			w.mu.Lock()
			dir := w.dirs[ev.Wd]
			var changed func()
			if dir != "" && name != "" {
				if changed = w.files[filepath.Join(dir, name)]; changed == nil {
					changed = w.every[dir]
				}
			}
			w.mu.Unlock()
			if changed != nil {
				changed()
			}
		}
	}
}

// close ends run.
func (w *watcher) close() { w.f.Close() }
