// Package glob matches slash-separated names (repository names) against
// patterns: path.Match syntax within a component ("team-*", "app?"), and a
// component of exactly "**" matching any number of components, none
// included. GC retention rules and access rules share it, so a pattern
// means the same thing in both.
package glob

import (
	"fmt"
	"path"
	"strings"
)

// Match reports whether name matches pattern. A malformed pattern matches
// nothing; Validate (or Compile) says why.
func Match(pattern, name string) bool {
	return matchParts(strings.Split(pattern, "/"), name)
}

// Pattern is a compiled pattern: split once, so that matching allocates
// nothing. Access rules are matched on every request.
type Pattern struct {
	parts []string
}

// Compile validates pattern and compiles it.
func Compile(pattern string) (Pattern, error) {
	if err := Validate(pattern); err != nil {
		return Pattern{}, err
	}
	return Pattern{parts: strings.Split(pattern, "/")}, nil
}

// Match reports whether name matches p.
func (p Pattern) Match(name string) bool { return matchParts(p.parts, name) }

// String returns the pattern as written.
func (p Pattern) String() string { return strings.Join(p.parts, "/") }

// Validate reports whether pattern is well formed.
func Validate(pattern string) error {
	if pattern == "" {
		return fmt.Errorf("pattern is empty")
	}
	for _, c := range strings.Split(pattern, "/") {
		if c == "**" {
			continue
		}
		if _, err := path.Match(c, ""); err != nil {
			return fmt.Errorf("pattern %q: %w", pattern, err)
		}
	}
	return nil
}

// matchParts matches name, component by component, against pattern's
// components. A name always has at least one component ("" is one empty
// component, as strings.Split has it); done means none is left.
func matchParts(pattern []string, name string) bool {
	return matchRest(pattern, name, false)
}

func matchRest(pattern []string, name string, done bool) bool {
	for len(pattern) > 0 {
		if pattern[0] == "**" {
			// "**/**" means what "**" does; folding them keeps the
			// backtracking linear in the name's components.
			for len(pattern) > 1 && pattern[1] == "**" {
				pattern = pattern[1:]
			}
			for {
				if matchRest(pattern[1:], name, done) {
					return true
				}
				if done {
					return false
				}
				name, done = next(name)
			}
		}
		if done {
			return false
		}
		comp, _, _ := strings.Cut(name, "/")
		if !matchComponent(pattern[0], comp) {
			return false
		}
		pattern = pattern[1:]
		name, done = next(name)
	}
	return done
}

// next drops name's first component.
func next(name string) (rest string, done bool) {
	_, rest, more := strings.Cut(name, "/")
	return rest, !more
}

// matchComponent matches one component; literal components, the common
// case, compare as strings.
func matchComponent(pattern, comp string) bool {
	if !strings.ContainsAny(pattern, `*?[\`) {
		return pattern == comp
	}
	ok, _ := path.Match(pattern, comp)
	return ok
}
