package origin

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// byteRange is a resolved byte range: length bytes from start.
type byteRange struct{ start, length int64 }

// parseRange parses an HTTP Range header for a resource of size bytes. Only
// one range is supported: no registry client asks for several.
func parseRange(h string, size int64) (byteRange, error) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return byteRange{}, fmt.Errorf("range %s: only byte ranges are supported", quoteShort(h))
	}
	if strings.Contains(spec, ",") {
		return byteRange{}, fmt.Errorf("range %s: multiple ranges are not supported", quoteShort(h))
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return byteRange{}, fmt.Errorf("range %s: want bytes=<start>-<end>", quoteShort(h))
	}
	if first == "" {
		// Suffix range: the last n bytes.
		n, err := parseOffset(last)
		if err != nil || n == 0 {
			return byteRange{}, fmt.Errorf("range %s: bad suffix length", quoteShort(h))
		}
		if n > size {
			n = size
		}
		if size == 0 {
			return byteRange{}, errors.New("range requested on an empty blob")
		}
		return byteRange{start: size - n, length: n}, nil
	}
	start, err := parseOffset(first)
	if err != nil {
		return byteRange{}, fmt.Errorf("range %s: bad start", quoteShort(h))
	}
	if start >= size {
		return byteRange{}, fmt.Errorf("range %s starts at or past the end", quoteShort(h))
	}
	end := size - 1
	if last != "" {
		if end, err = parseOffset(last); err != nil || end < start {
			return byteRange{}, fmt.Errorf("range %s: bad end", quoteShort(h))
		}
		if end >= size {
			end = size - 1
		}
	}
	return byteRange{start: start, length: end - start + 1}, nil
}

// parseContentRange parses the Content-Range of an upload chunk, which the
// distribution spec writes without a unit: "<start>-<end>", both inclusive.
// "bytes <start>-<end>/<size>" and "bytes=<start>-<end>" are accepted too.
func parseContentRange(h string) (start, end int64, err error) {
	s := strings.TrimSpace(h)
	s = strings.TrimPrefix(s, "bytes")
	s = strings.TrimLeft(s, " =")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("Content-Range %s: want <start>-<end>", quoteShort(h))
	}
	if start, err = parseOffset(a); err != nil {
		return 0, 0, fmt.Errorf("Content-Range %s: bad start", quoteShort(h))
	}
	if end, err = parseOffset(b); err != nil || end < start {
		return 0, 0, fmt.Errorf("Content-Range %s: bad end", quoteShort(h))
	}
	return start, end, nil
}

// parseOffset parses a non-negative decimal with no sign or spaces.
func parseOffset(s string) (int64, error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, errors.New("not a number")
	}
	return strconv.ParseInt(s, 10, 64)
}
