package manpage

import (
	"fmt"
	"regexp"
	"strings"
)

// A README region copies one section of a page, between these lines:
//
//	<!-- from docs/virtuald.conf.5.md, DESCRIPTION: edit it there, then make docs -->
//	...
//	<!-- end -->
var regionStart = regexp.MustCompile(`^<!-- from (\S+), ([A-Z][A-Z ]*): edit it there, then make docs -->$`)

const regionEnd = "<!-- end -->"

// Sync returns readme with every region replaced by the section it names,
// load giving the page at a path (relative to the README).
func Sync(readme []byte, load func(path string) (*Page, error)) ([]byte, error) {
	lines := strings.SplitAfter(string(readme), "\n")
	var out strings.Builder
	for i := 0; i < len(lines); i++ {
		out.WriteString(lines[i])
		m := regionStart.FindStringSubmatch(strings.TrimRight(lines[i], "\n"))
		if m == nil {
			continue
		}
		end := i + 1
		for end < len(lines) && strings.TrimRight(lines[end], "\n") != regionEnd {
			end++
		}
		if end == len(lines) {
			return nil, fmt.Errorf("README line %d: the region from %s has no %q", i+1, m[1], regionEnd)
		}
		p, err := load(m[1])
		if err != nil {
			return nil, fmt.Errorf("README line %d: %w", i+1, err)
		}
		body, ok := p.Body(m[2])
		if !ok {
			return nil, fmt.Errorf("README line %d: %s has no section %s", i+1, m[1], m[2])
		}
		out.WriteString(body)
		out.WriteString(lines[end])
		i = end
	}
	return []byte(out.String()), nil
}
