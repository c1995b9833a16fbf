package crypt

import (
	"strings"
	"testing"
)

// The vectors of Drepper's specification, and hashes `openssl passwd -6
// -salt SALT PASSWORD` made (glibc's crypt gives the same).
func TestSHA512Salt(t *testing.T) {
	tests := []struct{ password, salt, want string }{
		{"Hello world!", "saltstring", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
		{"pw-alice", "virtualdalice", "$6$virtualdalice$GvDq/HrRN5TbT7r85CylC7Sf7bhv3brrl8fsQ9XQkl901MLx7ou/17B6QCDL5Yf6uY6IEcsiyd.ChplW2oN9C/"},
		{"pw-bob", "virtualdbob", "$6$virtualdbob$3KnKjB/3ML/Yohe7jW0d3ycKr2QA0cLEpQleQenu2y2yNY9sJCQKpUmagk2bKZNVIWup2Wwrnxgy5C2S1r/8W."},
		// A salt past 16 characters is cut, as crypt cuts it.
		{"a very much longer text to encrypt.  This one even stretches over morethan one line.", "toolongsaltstringabc",
			"$6$toolongsaltstrin$d83lI1f8Dmg5G54BIEUCk.d1wzcvMvHiDIygj5z1mZBp8sK1sb1wb5GVvQ7hgyXszzhH1BdryFoyDxA5CIFdb1"},
	}
	for _, tt := range tests {
		got, err := SHA512Salt([]byte(tt.password), tt.salt)
		if err != nil || got != tt.want {
			t.Errorf("%q, %q: %s, %v, want %s", tt.password, tt.salt, got, err, tt.want)
		}
	}
	if _, err := SHA512Salt([]byte("x"), "bad$salt"); err == nil {
		t.Error("a salt with '$' was taken")
	}
}

func TestSHA512RandomSalt(t *testing.T) {
	a, err1 := SHA512([]byte("secret"))
	b, err2 := SHA512([]byte("secret"))
	if err1 != nil || err2 != nil || a == b || !strings.HasPrefix(a, "$6$") || len(strings.Split(a, "$")[2]) != saltLen {
		t.Errorf("%s, %s, %v, %v: want two different $6$ hashes with 16-character salts", a, b, err1, err2)
	}
}
