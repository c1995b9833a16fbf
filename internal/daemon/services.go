package daemon

import (
	"context"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/superserver"
	"go.uber.org/zap"
)

// serviceSet is one reading of the super-servers' configuration: the
// services that start virtuald, and the lines that seem to but cannot be
// understood. Like a snapshot, it is never modified once published.
type serviceSet struct {
	generation uint64 // 0 for the empty set before the first reading
	services   []superserver.Service
	problems   []superserver.Problem
}

// of returns the services that use the conf file at path.
func (s *serviceSet) of(path string) []superserver.Service {
	var out []superserver.Service
	for _, sv := range s.services {
		if sv.Conf == path {
			out = append(out, sv)
		}
	}
	return out
}

// servicesSettle is how long a change to a super-server's files waits for
// the next one before they are read: a package or an editor writes
// several files, or one file several times.
const servicesSettle = 200 * time.Millisecond

// findServices reads the super-servers' configuration again. A reading
// that finds what the last one found changes nothing; a new one adopts
// every conf file the services use (loaded now, not at the first
// connection) and asks the validator to check each service's program
// inside every root of its file.
func (d *Daemon) findServices() {
	if d.cfg.Services == nil {
		return
	}
	list, problems := superserver.Find(*d.cfg.Services)
	prev := d.services.Load()
	if prev.generation > 0 && reflect.DeepEqual(list, prev.services) && slices.Equal(problems, prev.problems) {
		return
	}
	next := &serviceSet{generation: prev.generation + 1, services: list, problems: problems}
	d.services.Store(next)
	for _, sv := range list {
		d.log.Info("service found", zap.String("from", sv.From), zap.String("super_server", sv.SuperServer), zap.String("name", sv.Name),
			zap.String("conf", sv.Conf), zap.String("program", sv.Program), zap.Bool("accept", sv.Accept),
			zap.String("transport", sv.Transport), zap.Uint16("port", sv.Port))
		if filepath.IsAbs(sv.Conf) && filepath.Clean(sv.Conf) == sv.Conf {
			d.adopt(sv.Conf, adoptedService)
		}
	}
	for _, p := range problems {
		d.log.Warn("service problem", zap.String("from", p.From), zap.String("reason", p.Reason))
	}
	d.kickValidator()
	d.reshedSoon()
}

// findServicesSoon asks the services task to read the super-servers'
// configuration again.
func (d *Daemon) findServicesSoon() {
	select {
	case d.refind <- struct{}{}:
	default:
	}
}

// servicesTask reads the super-servers' configuration again after each
// change to their files has settled.
func (d *Daemon) servicesTask(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.refind:
		}
		settle := time.NewTimer(servicesSettle)
	wait:
		for {
			select {
			case <-ctx.Done():
				settle.Stop()
				return nil
			case <-d.refind:
				settle.Reset(servicesSettle)
			case <-settle.C:
				break wait
			}
		}
		d.findServices()
	}
}

// watchServices watches the super-servers' files: inetd.conf and
// xinetd.conf themselves, and every file of xinetd's include directory
// and of the systemd unit directories.
func (d *Daemon) watchServices() {
	src := d.cfg.Services
	if src == nil {
		return
	}
	for _, f := range []string{src.InetdConf, src.XinetdConf} {
		if f != "" {
			d.watch.addFile(f, d.findServicesSoon)
		}
	}
	dirs := slices.Clone(src.SystemdDirs)
	if src.XinetdConf != "" {
		dirs = append(dirs, filepath.Join(filepath.Dir(src.XinetdConf), "xinetd.d"))
	}
	for _, dir := range dirs {
		d.watch.addDir(dir, d.findServicesSoon)
	}
}

// serviceStatuses reports services as status does.
func serviceStatuses(services []superserver.Service) []admin.ServiceStatus {
	out := make([]admin.ServiceStatus, 0, len(services))
	for _, sv := range services {
		ss := admin.ServiceStatus{From: sv.From, SuperServer: sv.SuperServer, Name: sv.Name, Program: sv.Program,
			Args: sv.Args, Accept: sv.Accept, Transport: sv.Transport, Port: sv.Port, Isolate: sv.Isolate}
		if ss.Isolate == "" {
			ss.Isolate = conf.IsolateAll.String()
		}
		switch {
		case sv.Address.IsValid():
			ss.Address = sv.Address.String()
		case sv.Host != "":
			ss.Address = sv.Host
		}
		if ss.Args == nil {
			ss.Args = []string{}
		}
		out = append(out, ss)
	}
	return out
}

// defaultIsolation is the isolation of a file's entries without isolate=:
// the weakest that a service of the file gives them (virtuald's -isolate),
// all when no service says otherwise.
func defaultIsolation(services []superserver.Service) conf.Isolation {
	def := conf.IsolateAll
	for _, sv := range services {
		if sv.Isolate != "" {
			i, _ := conf.ParseIsolation(sv.Isolate) // canonical, from cmdline.Parse
			def &= i
		}
	}
	return def
}
