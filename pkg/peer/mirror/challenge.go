package mirror

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/shoal-dev/shoal/pkg/auth"
)

// localChallenges points the realm of every Bearer challenge in h, which
// the origin sent and the mirror relays, at this agent's own token
// endpoint (serveToken, which proxies to the origin's), as reached by r:
// its scheme and Host. Clients then ask the agent for tokens, on the host
// they pull from: go-containerregistry (crane) refuses a realm on a
// private or loopback address other than the registry's own, which the
// origin's is when the agent is on localhost and the origin on a private
// address. Only a realm naming a Shoal token endpoint (path
// auth.TokenPath) is changed; an external token service's is relayed as
// the origin sent it. service, scope and error stay as they are, and the
// service is remembered (tokenUser checks tokens' audience against it).
func (s *Server) localChallenges(h http.Header, r *http.Request) {
	values := h.Values("WWW-Authenticate")
	if len(values) == 0 {
		return
	}
	realm := ""
	if r.Host != "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		realm = scheme + "://" + r.Host + auth.TokenPath
	}
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = v
		params, ok := parseBearerChallenge(v)
		if !ok {
			continue
		}
		if svc, ok := params.get("service"); ok {
			if old := s.service.Load(); old == nil || *old != svc {
				s.service.Store(&svc)
			}
		}
		old, ok := params.get("realm")
		if !ok || realm == "" {
			continue
		}
		if u, err := url.Parse(old); err != nil || u.Path != auth.TokenPath {
			continue
		}
		params.set("realm", realm)
		out[i] = params.String()
	}
	h["Www-Authenticate"] = out
}

// challengeParams are a Bearer challenge's auth-params, in order.
type challengeParams []challengeParam

type challengeParam struct{ key, value string }

func (p challengeParams) get(key string) (string, bool) {
	for _, kv := range p {
		if strings.EqualFold(kv.key, key) {
			return kv.value, true
		}
	}
	return "", false
}

func (p challengeParams) set(key, value string) {
	for i := range p {
		if strings.EqualFold(p[i].key, key) {
			p[i].value = value
		}
	}
}

// String writes the challenge back, every value a quoted-string.
func (p challengeParams) String() string {
	var b strings.Builder
	b.WriteString("Bearer ")
	quoted := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	for i, kv := range p {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv.key + `="` + quoted.Replace(kv.value) + `"`)
	}
	return b.String()
}

// parseBearerChallenge reads a WWW-Authenticate value holding one Bearer
// challenge (RFC 9110 11.6.1: auth-params, each a token or a
// quoted-string). Anything else (another scheme, several challenges in one
// value, a malformed one) is not ok, and is relayed untouched.
func parseBearerChallenge(v string) (challengeParams, bool) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, false
	}
	var params challengeParams
	for {
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" {
			return params, len(params) > 0
		}
		key, after, ok := strings.Cut(rest, "=")
		key = strings.TrimRight(key, " \t")
		if !ok || key == "" || strings.ContainsAny(key, " \t,\"") {
			return nil, false
		}
		rest = strings.TrimLeft(after, " \t")
		var value string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			if i == len(rest) {
				return nil, false // unterminated
			}
			value, rest = b.String(), rest[i+1:]
		} else {
			end := strings.IndexAny(rest, ", \t")
			if end < 0 {
				end = len(rest)
			}
			value, rest = rest[:end], rest[end:]
		}
		params = append(params, challengeParam{key: key, value: value})
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" {
			return params, true
		}
		if rest[0] != ',' {
			return nil, false
		}
		rest = rest[1:]
	}
}
