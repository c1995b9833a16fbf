package main

import "testing"

// A log line is key=value fields that a person and a parser read alike: a
// value is quoted when it is empty or holds a space, a quote, an equals
// sign, a backslash or anything unprintable, so that no value can make a
// field of its own or break the line.
func TestConnLogQuoting(t *testing.T) {
	for _, c := range []struct {
		value, want string
	}{
		{"192.0.2.1:21", "k=192.0.2.1:21"},
		{"/virtual/a.example", "k=/virtual/a.example"},
		{"", `k=""`},
		{"in.ftpd -l", `k="in.ftpd -l"`},
		{`say "hi"`, `k="say \"hi\""`},
		{"outcome=exec", `k="outcome=exec"`},
		{`C:\root`, `k="C:\\root"`},
		{"two\nlines", `k="two\nlines"`},
		{"tab\there", `k="tab\there"`},
		{"del\x7f", `k="del\x7f"`},
		{"café", `k="café"`},
		{"\xff", `k="\xff"`},
	} {
		var l connLog
		l.add("k", c.value)
		if got := l.String(); got != c.want {
			t.Errorf("%q: %s, want %s", c.value, got, c.want)
		}
	}
	var l connLog
	l.add("local", "192.0.2.1:21")
	l.add("reason", "no entry")
	l.add("outcome", "refused")
	if want := `local=192.0.2.1:21 reason="no entry" outcome=refused`; l.String() != want {
		t.Errorf("fields: %s, want %s", l.String(), want)
	}
}
