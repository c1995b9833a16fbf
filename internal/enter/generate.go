package enter

// virtuald-init (init/init.c) is committed built, so that a build needs
// no C compiler; make generate rebuilds it.
//go:generate sh init/build.sh
