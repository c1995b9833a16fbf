package creds

import (
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	tests := []struct {
		user, group string
		want        *Cred
		err         string
	}{
		{"", "", nil, ""},
		{"root", "", &Cred{UID: 0, GID: 0, SetUID: true, Name: "root(0:0)"}, ""},
		{"nobody", "", &Cred{UID: 65534, GID: 65534, SetUID: true, Name: "nobody(65534:65534)"}, ""},
		{"nobody", "0", &Cred{UID: 65534, GID: 0, SetUID: true, Name: "nobody(65534:0)"}, ""},
		{"0", "", &Cred{UID: 0, GID: 0, SetUID: true, Name: "0(0:0)"}, ""},
		{"2001", "2002", &Cred{UID: 2001, GID: 2002, SetUID: true, Name: "2001(2001:2002)"}, ""},
		{"", "nogroup", &Cred{GID: 65534, Name: "(:65534)"}, ""},
		{"2001", "", nil, "user 2001 has no entry in /etc/passwd, so it has no primary group: give group= too"},
		{"no-such-user", "", nil, "user no-such-user does not exist"},
		{"nobody", "no-such-group", nil, "group no-such-group does not exist"},
	}
	for _, tt := range tests {
		got, err := Resolve(tt.user, tt.group)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q %q: error %v, want %q", tt.user, tt.group, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q %q: %v", tt.user, tt.group, err)
			continue
		}
		if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
			t.Errorf("%q %q: got %+v, want %+v", tt.user, tt.group, got, tt.want)
		}
	}
}
