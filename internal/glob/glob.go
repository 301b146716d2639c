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
// nothing; Validate reports it.
func Match(pattern, name string) bool {
	return match(strings.Split(pattern, "/"), strings.Split(name, "/"))
}

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

func match(pattern, name []string) bool {
	for len(pattern) > 0 {
		if pattern[0] == "**" {
			// "**/**" means what "**" does; folding them keeps the
			// backtracking linear in the name's components.
			for len(pattern) > 1 && pattern[1] == "**" {
				pattern = pattern[1:]
			}
			for i := 0; i <= len(name); i++ {
				if match(pattern[1:], name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pattern[0], name[0]); !ok {
			return false
		}
		pattern, name = pattern[1:], name[1:]
	}
	return len(name) == 0
}
