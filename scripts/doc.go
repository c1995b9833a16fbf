// Package scripts holds the shell scripts that the Makefile and CI share
// (need: the tools each make target runs, installed or named when
// missing; fuzz: one short fuzz pass, past Go's fuzztime race); its tests
// run them as a person would.
package scripts
