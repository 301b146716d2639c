package gc

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoal-dev/shoal/internal/glob"
)

// Config is the `gc:` section of the origin configuration.
type Config struct {
	// Interval between scheduled runs; 0 disables the schedule (runs then
	// only start through the admin API).
	Interval Duration `yaml:"interval"`
	// Grace is how young a blob, layer link or upload may be and still
	// never be deleted. It must exceed the longest time a client takes
	// between uploading a blob and pushing the manifest that references it,
	// because until the manifest arrives only this grace keeps the blob.
	Grace Duration `yaml:"grace"`
	// UploadMaxAge is how long an upload session may stay unfinished before
	// GC purges it. registry:2 uses one week.
	UploadMaxAge Duration `yaml:"uploadMaxAge"`
	// DryRun makes scheduled runs report without deleting.
	DryRun bool `yaml:"dryRun"`
	// LeaseTTL is how long a lease stays valid without renewal. A node
	// that stops renewing (crash, pause) blocks others for at most this.
	LeaseTTL Duration `yaml:"leaseTTL"`
	// BatchSize is how many blobs are deleted between two lease checks.
	BatchSize int `yaml:"batchSize"`
	// Rules are the retention rules; the first whose pattern matches a
	// repository applies to it. Repositories no rule matches keep all
	// their tags and manifests.
	Rules []Rule `yaml:"rules"`
}

// Rule is a retention rule for the repositories its pattern matches.
type Rule struct {
	// Repositories is a glob over the repository name ("team/*", "**"):
	// path.Match syntax within a component, plus "**" matching any number
	// of components (internal/glob, as access rules use).
	Repositories string `yaml:"repositories"`
	// KeepLast keeps the N most recently pushed tags (by the time their
	// current link was written), whatever their age. 0: no count limit.
	KeepLast int `yaml:"keepLast"`
	// MaxAge deletes tags pushed longer ago than this, except the KeepLast
	// newest. 0: no age limit. With KeepLast set and MaxAge 0, every tag
	// beyond the newest KeepLast goes.
	MaxAge Duration `yaml:"maxAge"`
	// KeepTags are tag patterns that are never deleted and do not count
	// toward KeepLast: regular expressions, anchored at both ends.
	KeepTags []string `yaml:"keepTags"`
	// UntaggedMaxAge deletes manifests that no tag, index or kept referrer
	// subject reaches and whose revision is older than this. 0: never.
	UntaggedMaxAge Duration `yaml:"untaggedMaxAge"`

	keep []*regexp.Regexp
}

// DefaultConfig returns a configuration that collects blobs daily and
// deletes no tags: retention must be asked for.
func DefaultConfig() Config {
	return Config{
		// Daily keeps storage growth bounded without walking a large
		// store more often than its churn warrants.
		Interval: Duration(24 * time.Hour),
		// An hour covers a slow multi-gigabyte push over a poor link
		// between the first blob and the manifest.
		Grace: Duration(time.Hour),
		// registry:2's upload purger default.
		UploadMaxAge: Duration(168 * time.Hour),
		// Long enough that a GC pause (GC of the Go runtime, a slow
		// storage call) does not lose the lease, short enough that a
		// crashed node is replaced quickly.
		LeaseTTL: Duration(2 * time.Minute),
		// One lease check per 100 deletions keeps the check's cost small
		// while a batch finishes well within LeaseTTL.
		BatchSize: 100,
	}
}

// ParseConfig decodes a `gc:` YAML section over the defaults and validates it.
func ParseConfig(b []byte) (Config, error) {
	c := DefaultConfig()
	if err := yaml.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("decoding gc config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks the configuration and compiles the rules' patterns.
func (c *Config) Validate() error {
	var errs []error
	if c.Interval < 0 {
		errs = append(errs, errors.New("gc.interval must not be negative"))
	}
	if c.Grace < Duration(time.Minute) {
		errs = append(errs, fmt.Errorf("gc.grace %s is below the 1m minimum: pushes in flight would lose blobs", c.Grace))
	}
	if c.UploadMaxAge < c.Grace {
		errs = append(errs, fmt.Errorf("gc.uploadMaxAge %s must be at least gc.grace %s", c.UploadMaxAge, c.Grace))
	}
	if c.LeaseTTL < Duration(10*time.Second) {
		errs = append(errs, fmt.Errorf("gc.leaseTTL %s is below the 10s minimum", c.LeaseTTL))
	}
	if c.BatchSize <= 0 {
		errs = append(errs, fmt.Errorf("gc.batchSize must be positive, got %d", c.BatchSize))
	}
	for i := range c.Rules {
		if err := c.Rules[i].compile(); err != nil {
			errs = append(errs, fmt.Errorf("gc.rules[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Rule) compile() error {
	if r.Repositories == "" {
		return errors.New("repositories pattern is empty")
	}
	if err := glob.Validate(r.Repositories); err != nil {
		return fmt.Errorf("repositories: %w", err)
	}
	if r.KeepLast < 0 {
		return fmt.Errorf("keepLast must not be negative, got %d", r.KeepLast)
	}
	if r.MaxAge < 0 || r.UntaggedMaxAge < 0 {
		return errors.New("maxAge and untaggedMaxAge must not be negative")
	}
	r.keep = r.keep[:0]
	for _, p := range r.KeepTags {
		re, err := regexp.Compile("^(?:" + p + ")$")
		if err != nil {
			return fmt.Errorf("keepTags pattern %q: %w", p, err)
		}
		r.keep = append(r.keep, re)
	}
	return nil
}

// matchesRepo reports whether the rule applies to a repository.
func (r *Rule) matchesRepo(repo string) bool {
	return glob.Match(r.Repositories, repo)
}

// keepsTag reports whether a KeepTags pattern protects the tag.
func (r *Rule) keepsTag(tag string) bool {
	for _, re := range r.keep {
		if re.MatchString(tag) {
			return true
		}
	}
	return false
}

// Duration is a time.Duration that YAML spells as Go does ("90m", "1h30m")
// or in days and weeks ("30d", "2w"), since retention is thought of in days.
type Duration time.Duration

// String formats the duration as Go does.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML accepts a duration string or a number of seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// MarshalYAML writes the Go spelling.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalJSON writes the Go spelling, so that reports read "1.5s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON accepts what MarshalJSON writes, or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var ns int64
		if err := json.Unmarshal(b, &ns); err != nil {
			return fmt.Errorf("duration must be a string or nanoseconds: %s", b)
		}
		*d = Duration(ns)
		return nil
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParseDuration parses "30d", "2w", any time.ParseDuration string, or a
// plain number of seconds.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return Duration(time.Duration(n) * time.Second), nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if num, ok := strings.CutSuffix(s, suffix); ok {
			n, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing duration %q: %w", s, err)
			}
			return Duration(n * float64(unit)), nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("parsing duration %q: %w", s, err)
	}
	return Duration(v), nil
}
