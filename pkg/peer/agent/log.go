package agent

import (
	"fmt"
	"io"
	"log/slog"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

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

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }
