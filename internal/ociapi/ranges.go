package ociapi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ByteRange is Length bytes from Start.
type ByteRange struct{ Start, Length int64 }

// Last is the offset of the range's last byte, as Content-Range writes it.
func (br ByteRange) Last() int64 { return br.Start + br.Length - 1 }

// ParseRange resolves the Range header h of a GET for a resource of size
// bytes. ok is false when the whole resource is to be sent: no header, a
// unit other than bytes (RFC 9110 14.2: a server ignores units it does not
// know) or several ranges (which a server may ignore; no registry client
// asks for several, and a multipart answer would help none). A single
// byte range that is malformed or starts past the end is an error, to be
// answered 416 RANGE_INVALID with Content-Range "bytes */<size>". An end
// past the resource is cut to its end; a suffix longer than the resource
// is the whole of it.
func ParseRange(h string, size int64) (br ByteRange, ok bool, err error) {
	spec, isBytes := strings.CutPrefix(h, "bytes=")
	if !isBytes || strings.Contains(spec, ",") {
		return ByteRange{}, false, nil
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return ByteRange{}, false, fmt.Errorf("range %s: want bytes=<start>-<end>", Quote(h))
	}
	if first == "" {
		// Suffix range: the last n bytes.
		n, err := parseOffset(last)
		if err != nil || n == 0 {
			return ByteRange{}, false, fmt.Errorf("range %s: bad suffix length", Quote(h))
		}
		if size == 0 {
			return ByteRange{}, false, fmt.Errorf("range %s requested on an empty blob", Quote(h))
		}
		n = min(n, size)
		return ByteRange{Start: size - n, Length: n}, true, nil
	}
	start, err := parseOffset(first)
	if err != nil {
		return ByteRange{}, false, fmt.Errorf("range %s: bad start", Quote(h))
	}
	if start >= size {
		return ByteRange{}, false, fmt.Errorf("range %s starts at or past the end", Quote(h))
	}
	end := size - 1
	if last != "" {
		if end, err = parseOffset(last); err != nil || end < start {
			return ByteRange{}, false, fmt.Errorf("range %s: bad end", Quote(h))
		}
		end = min(end, size-1)
	}
	return ByteRange{Start: start, Length: end - start + 1}, true, nil
}

// ParseContentRange parses the Content-Range of an upload chunk, which the
// distribution spec writes without a unit: "<start>-<end>", both inclusive.
// "bytes <start>-<end>/<size>" and "bytes=<start>-<end>" are accepted too.
func ParseContentRange(h string) (start, end int64, err error) {
	s := strings.TrimSpace(h)
	s = strings.TrimPrefix(s, "bytes")
	s = strings.TrimLeft(s, " =")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("Content-Range %s: want <start>-<end>", Quote(h))
	}
	if start, err = parseOffset(a); err != nil {
		return 0, 0, fmt.Errorf("Content-Range %s: bad start", Quote(h))
	}
	if end, err = parseOffset(b); err != nil || end < start {
		return 0, 0, fmt.Errorf("Content-Range %s: bad end", Quote(h))
	}
	return start, end, nil
}

// parseOffset parses a non-negative decimal with no sign or spaces, as
// RFC 9110 writes byte positions.
func parseOffset(s string) (int64, error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, errors.New("not a number")
	}
	return strconv.ParseInt(s, 10, 64)
}
