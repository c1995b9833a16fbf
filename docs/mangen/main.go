// Command mangen makes the man pages from their sources in docs/ and
// keeps the README's copies of their sections in step (see
// internal/manpage); `make docs` and `make deb` run it.
//
//	mangen -o DIR -version V -date D PAGE.md...   # write DIR/NAME.SECTION for each page
//	mangen -readme README.md                      # rewrite the README's regions from the pages
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/virtuald/virtuald/internal/manpage"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("o", "", "write the man pages into this directory")
	version := flag.String("version", "dev", "the version named in each page's header")
	date := flag.String("date", "", "the date in each page's header (YYYY-MM-DD)")
	readme := flag.String("readme", "", "rewrite this README's regions from the pages they name")
	flag.Parse()
	if *readme != "" {
		old, err := os.ReadFile(*readme)
		if err != nil {
			return err
		}
		updated, err := manpage.Sync(old, func(path string) (*manpage.Page, error) {
			return manpage.Load(filepath.Join(filepath.Dir(*readme), path))
		})
		if err != nil {
			return err
		}
		return os.WriteFile(*readme, updated, 0o644)
	}
	if *out == "" || flag.NArg() == 0 {
		return fmt.Errorf("usage: mangen -o DIR -version V -date D PAGE.md..., or mangen -readme README.md")
	}
	for _, src := range flag.Args() {
		p, err := manpage.Load(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*out, p.Name+"."+p.Section), p.Roff(*version, *date), 0o644); err != nil {
			return err
		}
	}
	return nil
}
