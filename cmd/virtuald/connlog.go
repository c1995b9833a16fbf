package main

import (
	"strconv"
	"strings"
)

// connLog accumulates the fields of the one log line a connection gets.
type connLog struct {
	b []byte
}

func (l *connLog) add(key, value string) {
	if len(l.b) > 0 {
		l.b = append(l.b, ' ')
	}
	l.b = append(l.b, key...)
	l.b = append(l.b, '=')
	if value == "" || strings.ContainsAny(value, " \"=\\") || !isPrintable(value) {
		l.b = strconv.AppendQuote(l.b, value)
	} else {
		l.b = append(l.b, value...)
	}
}

func (l *connLog) String() string { return string(l.b) }

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
