// Command noop does nothing: the start-up cost of any static Go program,
// against which virtuald's own is measured.
package main

func main() {}
