package mirror

import (
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/auth"
)

// The offline record: what the origin said within OfflineTTL, consulted
// only while it is down (the origin could not be reached or answered
// 502/503/504): its yeses to (repository, credentials), the digests it
// confirmed in a repository, and a tag's last manifest. Credentials are
// known by their hash (credentialKey), except a bearer token the origin
// issued, which is known by its user (tokenUser): tokens change from one
// pull to the next, so a client with a token would otherwise never present
// credentials the origin said yes to. While the origin answers, it decides
// alone, and a token's user is never consulted.

// offlineCredential is what the offline record knows r's credentials by
// when it records the origin's answer for repository name: the user of its
// token if the token is the origin's, else the credentials' hash.
func (s *Server) offlineCredential(r *http.Request, name string) string {
	if user := s.tokenUser(r, name); user != "" {
		return userKey(user)
	}
	return credentialKey(r)
}

// offlineLookup tries found with each name the offline record may know
// r's credentials by: their hash, then the user of the origin's token
// (which is verified only if the hash is not known). Both, because a token
// recorded before its service or key was known is recorded by its hash.
func (s *Server) offlineLookup(r *http.Request, name string, found func(cred string) bool) bool {
	if found(credentialKey(r)) {
		return true
	}
	user := s.tokenUser(r, name)
	return user != "" && found(userKey(user))
}

// noteYes records that the origin let r's credentials read repository
// name: while it is down, what this agent holds of the repository (and
// the origin confirmed to be in it, notePresent) is served for OfflineTTL
// to the same credentials, or the same user's tokens.
func (s *Server) noteYes(r *http.Request, name string) {
	if s.offline != nil {
		s.offline.Add(repoAuthKey(name, s.offlineCredential(r, name)), struct{}{})
	}
}

// noteNo drops the origin's earlier yes to r's credentials (and to its
// token's user) for repository name when it now answers them 401 or 403:
// its last word is what counts while it is down, so a revocation reaches
// the offline record as soon as the origin says it.
func (s *Server) noteNo(r *http.Request, name string) {
	if s.offline == nil {
		return
	}
	s.offline.Remove(repoAuthKey(name, credentialKey(r)))
	if user := s.tokenUser(r, name); user != "" {
		s.offline.Remove(repoAuthKey(name, userKey(user)))
	}
}

// notePresent records that the origin served (or authorized, or listed in
// a manifest) d under repository name: a cached d is served under that
// name only, with the origin's yes to the credentials for the repository
// (readableCached), or while it is down (mayReadOffline).
func (s *Server) notePresent(name string, d digest.Digest) {
	s.present.Add(presentKey(name, d), struct{}{})
}

// mayReadOffline reports whether r may be served cached d under
// repository name without asking the origin, which is down: within
// OfflineTTL the origin confirmed that d is in the repository and said yes
// to these credentials for it, or to the user of r's token (which must
// verify with the origin's keys and grant pull on name). The access rules
// (per repository) stay the origin's, and content cached for one
// repository is not served under another's name.
func (s *Server) mayReadOffline(r *http.Request, name string, d digest.Digest) bool {
	if s.offline == nil {
		return false
	}
	if _, ok := s.present.Get(presentKey(name, d)); !ok {
		return false
	}
	return s.offlineLookup(r, name, func(cred string) bool {
		_, ok := s.offline.Get(repoAuthKey(name, cred))
		return ok
	})
}

// tokenUser returns the user of r's bearer token if the token is the
// origin's: it verifies with the origin's keys, for the service the
// origin names in its challenges, has not expired (the origin's leeway),
// names a user (not an anonymous token) and grants pull on repository
// name. Otherwise "": credentials are then known by their hash only.
func (s *Server) tokenUser(r *http.Request, name string) string {
	service := s.service.Load()
	if s.tokens == nil || service == nil {
		return ""
	}
	values := r.Header.Values("Authorization")
	if len(values) != 1 {
		return ""
	}
	scheme, raw, _ := strings.Cut(values[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	c, err := s.tokens.VerifyToken(strings.TrimSpace(raw), *service)
	if err != nil || c.Subject == "" || !c.Allows(name, auth.Pull) {
		return ""
	}
	return c.Subject
}

// userKey names a user in the offline record. It cannot be mistaken for
// a credentialKey, which is hex or "-".
func userKey(user string) string { return "user:" + user }

// presentKey names d in repository name in the offline record.
func presentKey(name string, d digest.Digest) string { return "have|" + name + "|" + d.String() }
