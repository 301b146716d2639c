package mirror

import (
	"errors"
	"strconv"
	"strings"
)

var errRangeUnsatisfiable = errors.New("range not satisfiable")

// parseRange parses a Range header against a blob of size bytes. It
// returns the first and last byte (inclusive) and whether a range was asked
// for. One range per request, as every registry client sends; a header that
// is not a bytes range is ignored, as RFC 9110 allows.
func parseRange(h string, size int64) (first, last int64, partial bool, err error) {
	if h == "" {
		return 0, size - 1, false, nil
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size - 1, false, nil
	}
	a, b, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, false, errRangeUnsatisfiable
	}
	if a == "" {
		// Suffix: the last n bytes.
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 || size == 0 {
			return 0, 0, false, errRangeUnsatisfiable
		}
		return max(size-n, 0), size - 1, true, nil
	}
	first, err = strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 || first >= size {
		return 0, 0, false, errRangeUnsatisfiable
	}
	last = size - 1
	if b != "" {
		l, err := strconv.ParseInt(b, 10, 64)
		if err != nil || l < first {
			return 0, 0, false, errRangeUnsatisfiable
		}
		last = min(l, size-1)
	}
	return first, last, true, nil
}
