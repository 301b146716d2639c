package ociapi

import (
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
)

// MaxNameLength is the reference registry's limit on a repository name,
// kept so that names written by one can always be read by the other.
const MaxNameLength = 255

// ValidName reports whether name is a repository name as the distribution
// spec defines it: path components of [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
// separated by '/', at most MaxNameLength bytes. Unlike
// reference.NameRegexp it takes no registry host as the first component
// ("Host:5000/app"): that is no repository name. Written out rather than
// a regexp, because it runs on every request (routing, access control) and
// is several times faster.
func ValidName(name string) bool {
	if name == "" || len(name) > MaxNameLength {
		return false
	}
	// Alphanumeric runs, each pair joined by one separator: '/' between
	// components, '.', '_', '__' or dashes within one.
	for i := 0; ; {
		run := i
		for i < len(name) && alnum(name[i]) {
			i++
		}
		switch {
		case i == run:
			return false // a separator at an end or beside another
		case i == len(name):
			return true
		}
		switch name[i] {
		case '/', '.':
			i++
		case '_':
			i++
			if i < len(name) && name[i] == '_' {
				i++
			}
		case '-':
			for i < len(name) && name[i] == '-' {
				i++
			}
		default:
			return false
		}
	}
}

func alnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// ValidTag reports whether tag is a tag as the distribution spec defines
// it: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidTag(tag string) bool {
	if tag == "" || len(tag) > 128 || tag[0] == '.' || tag[0] == '-' {
		return false
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if !alnum(c) && !('A' <= c && c <= 'Z') && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// ValidateName checks a repository name, answering 400 NAME_INVALID.
func ValidateName(name string) error {
	if !ValidName(name) {
		return &Error{Status: http.StatusBadRequest, Code: CodeNameInvalid,
			Message: "invalid repository name: use lowercase letters, digits and separators (., _, __, -) between path components, at most 255 characters",
			Detail:  map[string]string{"name": name}}
	}
	return nil
}

// ValidateTag checks a tag, answering 400 MANIFEST_INVALID, the code the
// spec gives a malformed reference in a manifest path.
func ValidateTag(tag string) error {
	if !ValidTag(tag) {
		return &Error{Status: http.StatusBadRequest, Code: CodeManifestInvalid,
			Message: "invalid tag " + Quote(tag) + ": up to 128 characters of letters, digits, '_', '.', '-', not starting with '.' or '-'",
			Detail:  map[string]string{"tag": tag}}
	}
	return nil
}

// ParseDigest parses a digest from a request, answering 400 DIGEST_INVALID
// for a malformed one and for an algorithm other than sha256 and sha512,
// the two the spec has registries support.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", &Error{Status: http.StatusBadRequest, Code: CodeDigestInvalid,
			Message: "invalid digest " + Quote(s) + ": want <algorithm>:<hex>, with sha256 or sha512",
			Detail:  map[string]string{"digest": s}, Cause: err}
	}
	if d.Algorithm() != digest.SHA256 && d.Algorithm() != digest.SHA512 {
		return "", &Error{Status: http.StatusBadRequest, Code: CodeDigestInvalid,
			Message: "unsupported digest algorithm " + Quote(string(d.Algorithm())) + ": use sha256 or sha512"}
	}
	return d, nil
}

// IsDigestRef tells a digest reference from a tag: tags cannot contain ':'.
func IsDigestRef(ref string) bool { return strings.Contains(ref, ":") }
