package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
)

// printStatus renders the status for a person: a header, then per conf file
// a table of its entries (with the reason of each invalid one under it),
// then the addresses no entry serves.
func printStatus(w io.Writer, st *ipc.Status) {
	fmt.Fprintf(w, "ipwatchd %s, up %s, netlink resyncs %d, bpf %s\n", st.Version,
		(time.Duration(st.UptimeSeconds) * time.Second).String(), st.NetlinkResyncs, st.BPF)
	fmt.Fprintf(w, "questions answered %d, stale %d, racy %d, unknown conf %d, errors %d\n",
		st.Queries.OK, st.Queries.Stale, st.Queries.Racy, st.Queries.Unknown, st.Queries.Error)
	for _, c := range st.Confs {
		loaded := "never loaded"
		if c.Generation > 0 {
			loaded = fmt.Sprintf("generation %d, loaded %s", c.Generation, c.LoadedAt.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(w, "\n%s: %s\n", c.Path, loaded)
		switch {
		case c.Error != "" && c.Generation == 0:
			fmt.Fprintf(w, "  cannot be loaded (virtuald reads the file itself): %s\n", c.Error)
		case c.Error != "":
			fmt.Fprintf(w, "  the last load failed (generation %d is still served): %s\n", c.Generation, c.Error)
		}
		for _, p := range c.Problems {
			fmt.Fprintf(w, "  problem: %s\n", p)
		}
		if len(c.Entries) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  KEY\tROOT\tUSER\tSTATE\tADDRESSES\tCONNECTIONS\tRESOLVED")
		for _, en := range c.Entries {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%d\n", en.Key, en.Root, userOf(en), en.State, addressesOf(en), en.Connections, en.Resolved)
		}
		tw.Flush()
		for _, en := range c.Entries {
			if en.Reason != "" {
				fmt.Fprintf(w, "  %s (line %d) is %s: %s\n", en.Key, en.Line, en.State, en.Reason)
			}
			if en.Warning != "" {
				fmt.Fprintf(w, "  %s (line %d): warning: %s\n", en.Key, en.Line, en.Warning)
			}
		}
	}
	if len(st.Unmapped) > 0 {
		fmt.Fprintln(w, "\naddresses no entry serves:")
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  ADDRESS\tINTERFACE\tCONNECTIONS")
		for _, u := range st.Unmapped {
			fmt.Fprintf(tw, "  %s\t%s\t%d\n", u.Address, u.Interface, u.Connections)
		}
		tw.Flush()
	}
}

func userOf(en ipc.EntryStatus) string {
	switch {
	case en.User != "" && en.Group != "":
		return en.User + ":" + en.Group
	case en.User != "":
		return en.User
	case en.Group != "":
		return ":" + en.Group
	}
	return "-"
}

// addressesOf lists the interface addresses an entry serves, each with its
// label (eth0:1) or interface, and whether it is not live yet.
func addressesOf(en ipc.EntryStatus) string {
	if len(en.Addresses) == 0 {
		return "-"
	}
	var as []string
	for _, a := range en.Addresses {
		where := a.Label
		if where == "" {
			where = a.Interface
		}
		if !a.Live {
			where += ", not live"
		}
		as = append(as, a.Address+" ("+where+")")
	}
	return strings.Join(as, ", ")
}
