// Package daemon holds what Shoal's long-running commands (origin, tracker,
// peer-agent) share around their own configuration: a YAML file laid over
// the defaults, flags that override the file, and the log settings.
package daemon

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"gopkg.in/yaml.v3"
)

// LogConfig selects the log level (debug, info, warn, error) and format
// (text, json).
type LogConfig struct {
	// Level is the lowest level logged: debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text (key=value lines, for people) or json (one object a
	// line, for log collectors).
	Format string `yaml:"format"`
}

// Logger returns the logger the configuration asks for, writing to w.
func (l LogConfig) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("config: log level %q: %w", l.Level, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.Format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("config: log format %q: want text or json", l.Format)
}

// LoadYAML decodes the YAML file at path over dst, which holds the
// defaults. Unknown keys are an error, so that a misspelt setting is
// reported instead of silently left at its default.
func LoadYAML(path string, dst any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && err != io.EOF {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Overrides returns a function that copies a string flag's value into dst
// when, and only when, the flag was given on the command line: flags
// override the config file, and an absent flag leaves the file's value.
// Call it after fs.Parse.
func Overrides(fs *flag.FlagSet) func(name string, dst *string, v string) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
}
