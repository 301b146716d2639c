package daemon

import (
	"os"
	"path/filepath"
)

// Dirs says where a daemon keeps its data and cache when its config names
// no directory. Run as a service, the system directories: /var/lib/shoal
// and /var/cache/... as deploy/ expects. A service is a process of root,
// or one systemd started with a StateDirectory or CacheDirectory (it sets
// $STATE_DIRECTORY or $CACHE_DIRECTORY; deploy/systemd's units run the
// origin as user shoal and the agent as a dynamic user, and create those
// very directories). Run by anyone else, per-user directories under the
// XDG base directories, so that trying Shoal needs no root:
// $XDG_DATA_HOME/shoal (default ~/.local/share/shoal) and
// $XDG_CACHE_HOME/shoal (default ~/.cache/shoal).
type Dirs struct {
	// System is true for a service, and for a user without a home
	// directory (none, or /), who has nowhere else to go: the system
	// paths are used as given.
	System bool
	// DataHome and CacheHome are the XDG base directories, absolute.
	DataHome, CacheHome string
}

// DefaultDirs returns the directories for the user running the process.
func DefaultDirs() Dirs {
	home, _ := os.UserHomeDir()
	return dirsFor(os.Geteuid(), os.Getenv, home)
}

func dirsFor(euid int, getenv func(string) string, home string) Dirs {
	if euid == 0 || getenv("STATE_DIRECTORY") != "" || getenv("CACHE_DIRECTORY") != "" {
		return Dirs{System: true}
	}
	if home == "/" {
		home = ""
	}
	// The XDG spec: a relative path in these variables is invalid and is
	// ignored.
	base := func(env string, rel ...string) string {
		if v := getenv(env); filepath.IsAbs(v) {
			return v
		}
		if home == "" {
			return ""
		}
		return filepath.Join(append([]string{home}, rel...)...)
	}
	d := Dirs{DataHome: base("XDG_DATA_HOME", ".local", "share"), CacheHome: base("XDG_CACHE_HOME", ".cache")}
	if d.DataHome == "" || d.CacheHome == "" {
		return Dirs{System: true}
	}
	return d
}

// Data returns system, the directory a daemon run as root keeps its data
// in, or for another user <DataHome>/shoal/<name> (<DataHome>/shoal when
// name is empty).
func (d Dirs) Data(system, name string) string {
	if d.System {
		return system
	}
	return filepath.Join(d.DataHome, "shoal", name)
}

// Cache is Data for caches: system, or <CacheHome>/shoal/<name>.
func (d Dirs) Cache(system, name string) string {
	if d.System {
		return system
	}
	return filepath.Join(d.CacheHome, "shoal", name)
}
