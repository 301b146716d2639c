package auth

import (
	"fmt"
	"log/slog"
	"time"
)

// htpasswd is the users of an htpasswd file.
type htpasswd struct {
	path string
}

func openHtpasswd(path string, now func() time.Time, log *slog.Logger) (*htpasswd, error) {
	return &htpasswd{path: path}, nil
}

// check checks user's password.
func (h *htpasswd) check(user, pass string) error {
	return fmt.Errorf("user %q: %w", user, ErrBadCredentials)
}
