// Package manpage makes the man pages from their sources under docs/ (a
// small subset of Markdown), and keeps the README's copies of their
// sections in step: one text, two places, no drift. The subset is what
// those pages use: a title line, ## sections, ### subsections,
// paragraphs, fenced code, "- " lists (an item that starts with a code
// span and a colon is an option: a tagged paragraph), `code` and **bold**.
// Anything else is printed as it is, so a page shows what it holds even
// when it strays; the tests run groff over every page to keep it clean.
package manpage

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Page is one man page source.
type Page struct {
	Name     string // "virtuald.conf"
	Section  string // "5"
	Summary  string // the NAME line's text after the dash
	Sections []Section
}

// Section is one "## NAME" of a page, its body as written.
type Section struct {
	Name string
	Body string
}

var titleLine = regexp.MustCompile(`^# ([a-z][a-z0-9.-]*)\(([1-8])\) -- (.+)$`)

// Parse reads a page: "# name(section) -- summary", then its sections.
func Parse(md []byte) (*Page, error) {
	lines := strings.Split(strings.TrimRight(string(md), "\n"), "\n")
	m := titleLine.FindStringSubmatch(lines[0])
	if m == nil {
		return nil, fmt.Errorf("the first line must be \"# name(section) -- summary\", not %q", lines[0])
	}
	p := &Page{Name: m[1], Section: m[2], Summary: m[3]}
	for _, l := range lines[1:] {
		if name, ok := strings.CutPrefix(l, "## "); ok {
			p.Sections = append(p.Sections, Section{Name: name})
			continue
		}
		if len(p.Sections) == 0 {
			if strings.TrimSpace(l) != "" {
				return nil, fmt.Errorf("text before the first section: %q", l)
			}
			continue
		}
		s := &p.Sections[len(p.Sections)-1]
		s.Body += l + "\n"
	}
	for i := range p.Sections {
		p.Sections[i].Body = strings.Trim(p.Sections[i].Body, "\n") + "\n"
	}
	return p, nil
}

// Load reads and parses the page at path.
func Load(path string) (*Page, error) {
	md, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(md)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Body returns the body of the section called name, or false.
func (p *Page) Body(name string) (string, bool) {
	for _, s := range p.Sections {
		if s.Name == name {
			return s.Body, true
		}
	}
	return "", false
}

// manuals names the manual of each section, for the page header.
var manuals = map[string]string{"1": "User Commands", "5": "File Formats Manual", "8": "System Manager's Manual"}

// Roff renders the page for man(7); version and date go in its header.
func (p *Page) Roff(version, date string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, ".TH %s %s %q %q %q\n", strings.ToUpper(p.Name), p.Section, date, "virtuald "+version, manuals[p.Section])
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", escape(p.Name), inline(p.Summary))
	for _, s := range p.Sections {
		fmt.Fprintf(&b, ".SH %s\n", escape(s.Name))
		body(&b, s.Body)
	}
	return b.Bytes()
}

// option is a list item that names an option: "`-flag ARG`: text".
var option = regexp.MustCompile("^`([^`]+)`: (.*)$")

// body renders the blocks of a section.
func body(b *bytes.Buffer, md string) {
	lines := strings.Split(strings.TrimRight(md, "\n"), "\n")
	for i := 0; i < len(lines); {
		l := lines[i]
		switch {
		case strings.TrimSpace(l) == "":
			i++
		case strings.HasPrefix(l, "```"):
			b.WriteString(".PP\n.RS 4\n.nf\n")
			for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
				b.WriteString(line(escape(lines[i])))
			}
			b.WriteString(".fi\n.RE\n")
			i++
		case strings.HasPrefix(l, "### "):
			fmt.Fprintf(b, ".SS %s\n", escape(strings.TrimPrefix(l, "### ")))
			i++
		case strings.HasPrefix(l, "- "):
			text := []string{strings.TrimPrefix(l, "- ")}
			for i++; i < len(lines) && strings.HasPrefix(lines[i], "  "); i++ {
				text = append(text, strings.TrimSpace(lines[i]))
			}
			item := strings.Join(text, " ")
			if m := option.FindStringSubmatch(item); m != nil {
				fmt.Fprintf(b, ".TP\n\\fB%s\\fR\n", escape(m[1]))
				item = m[2]
			} else {
				b.WriteString(".IP \\(bu 2\n")
			}
			b.WriteString(line(inline(item)))
		default:
			var text []string
			for ; i < len(lines) && strings.TrimSpace(lines[i]) != "" && !strings.HasPrefix(lines[i], "```") &&
				!strings.HasPrefix(lines[i], "- ") && !strings.HasPrefix(lines[i], "### "); i++ {
				text = append(text, strings.TrimSpace(lines[i]))
			}
			b.WriteString(".PP\n")
			b.WriteString(line(inline(strings.Join(text, " "))))
		}
	}
}

// line ends a line of text, guarding a leading dot or quote, which roff
// would take for a request.
func line(s string) string {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s + "\n"
}

// escape makes literal text safe for roff: a backslash is roff's escape,
// and a dash in an option or a command line must print as a minus sign.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}

// inline renders `code` in bold, as options and commands are in man
// pages, and **text** in bold; other text is escaped, with the dashes of
// words (hyphens) left as they are.
func inline(s string) string {
	var b strings.Builder
	for s != "" {
		i := strings.IndexAny(s, "`*\\")
		if i < 0 {
			b.WriteString(hyphens(s))
			break
		}
		b.WriteString(hyphens(s[:i]))
		s = s[i:]
		switch {
		case s[0] == '`':
			if end := strings.IndexByte(s[1:], '`'); end >= 0 {
				b.WriteString(`\fB` + escape(s[1:1+end]) + `\fR`)
				s = s[2+end:]
				continue
			}
		case strings.HasPrefix(s, "**"):
			if end := strings.Index(s[2:], "**"); end >= 0 {
				b.WriteString(`\fB` + hyphens(s[2:2+end]) + `\fR`)
				s = s[4+end:]
				continue
			}
		case s[0] == '\\':
			b.WriteString(`\e`)
			s = s[1:]
			continue
		}
		b.WriteByte(s[0])
		s = s[1:]
	}
	return b.String()
}

// hyphens escapes the dashes that start a word (an option written without
// a code span) and leaves the hyphens inside words.
func hyphens(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '-' && (i == 0 || s[i-1] == ' ' || s[i-1] == '(') {
			b.WriteString(`\-`)
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
