package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/adminapi"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// The admin API's routes.
const (
	adminGCPath        = "/admin/v1/gc"
	adminAuthCheckPath = "/admin/v1/auth/check"
)

// adminRoutes are the admin API's handlers besides the auth check; a nil
// one is not served.
type adminRoutes struct {
	// gc is the garbage collector's (/admin/v1/gc).
	gc http.Handler
	// cluster and preheat are the origin cluster's view and the preheat
	// of an image's blobs on their owners (admin_cluster.go).
	cluster, preheat http.Handler
}

// startAdmin serves the admin API on cfg.AdminListen; nothing when it is
// empty. authz, when not nil, is who may call the API. The returned
// function stops serving.
func startAdmin(cfg *Config, routes adminRoutes, authz *auth.Authorizer, log *slog.Logger) (func(), error) {
	if cfg.AdminListen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	h, hosts, err := adminHandler(ln.Addr(), cfg.AdminListen, cfg.AdminHosts, routes, authz, log)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	log.Info("admin API serving", "addr", "http://"+ln.Addr().String(), "hosts", hosts, "auth", authz != nil)
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("admin API stopped", "err", err)
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}

// adminHandler is the admin API listening on addr (configured as listen):
// its routes behind the Host/Origin check and, with authz, the admin
// action check. It also returns the hosts it answers to, sorted, for the log.
func adminHandler(addr net.Addr, listen string, extraHosts []string, routes adminRoutes, authz *auth.Authorizer, log *slog.Logger) (http.Handler, []string, error) {
	hosts, err := adminHostSet(addr, listen, extraHosts)
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	for path, h := range map[string]http.Handler{adminGCPath: routes.gc, adminapi.ClusterPath: routes.cluster, adminapi.PreheatPath: routes.preheat} {
		if h != nil {
			mux.Handle(path, h)
		}
	}
	mux.Handle(adminAuthCheckPath, authCheckHandler(authz))
	names := make([]string, 0, len(hosts))
	for h := range hosts {
		names = append(names, h)
	}
	slices.Sort(names)
	return hostGuard(hosts, adminAuth(authz, mux, log)), names, nil
}

// adminHostSet is the set of Host values (host:port, normalized by
// normalHost) the admin API answers to: the listener's own address and the
// host it was configured with; localhost, 127.0.0.1 and [::1] when it
// listens on loopback; every address of the machine when it listens on all
// of them; and the configured extra hosts (a port-less entry takes the
// listener's port).
func adminHostSet(addr net.Addr, listen string, extra []string) (map[string]bool, error) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("admin API: listener address %v is not TCP", addr)
	}
	port := strconv.Itoa(tcp.Port)
	set := map[string]bool{}
	add := func(host, p string) { set[normalHost(net.JoinHostPort(strings.Trim(host, "[]"), p), port)] = true }
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		add(h, port)
	}
	ip := tcp.IP
	if !ip.IsUnspecified() {
		add(ip.String(), port)
	}
	if ip.IsLoopback() || ip.IsUnspecified() {
		add("localhost", port)
		add("127.0.0.1", port)
		add("::1", port)
	}
	if ip.IsUnspecified() {
		ifaddrs, err := net.InterfaceAddrs()
		if err != nil {
			return nil, fmt.Errorf("admin API: listing this machine's addresses for the Host check: %w", err)
		}
		for _, a := range ifaddrs {
			if n, ok := a.(*net.IPNet); ok {
				add(n.IP.String(), port)
			}
		}
	}
	for _, h := range extra {
		if host, p, err := net.SplitHostPort(h); err == nil {
			add(host, p)
		} else {
			add(h, port)
		}
	}
	return set, nil
}

// normalHost puts a Host value in the form adminHostSet keeps: lower case,
// IP literals in their canonical form, the port made explicit (defPort
// when absent).
func normalHost(hostport, defPort string) string {
	hostport = strings.ToLower(hostport)
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), defPort
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().WithZone("").String()
	}
	return net.JoinHostPort(host, port)
}

// hostGuard refuses requests whose Host is not one of the admin API's own
// names, or whose Origin header names another site. A web page a browser
// loaded from elsewhere can make requests to a loopback admin API (by DNS
// rebinding: a name of the attacker's that now resolves to 127.0.0.1, or by
// a cross-site form POST); such requests carry the attacker's Host or
// Origin. Checked whether or not access control is on.
func hostGuard(hosts map[string]bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hosts[normalHost(r.Host, "80")] {
			writeAdminError(w, http.StatusForbidden, fmt.Errorf(
				"host %s is not a name of this admin API; if it is one, add it to adminHosts in the origin's config", shortQuote(r.Host)))
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !hosts[normalHost(u.Host, defaultPort(u.Scheme))] {
				writeAdminError(w, http.StatusForbidden, fmt.Errorf(
					"origin %s is not this admin API: cross-site requests are refused", shortQuote(o)))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// adminAuth lets through only requests with credentials (Basic, or a bearer
// token) that the rules allow the admin action on auth.AdminRepository.
// Without an authorizer every request passes, and only the Host check and
// a loopback listener protect the API.
func adminAuth(a *auth.Authorizer, next http.Handler, log *slog.Logger) http.Handler {
	if a == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub, err := a.Authenticate(r)
		switch {
		case err != nil && !errors.Is(err, auth.ErrBadCredentials):
			log.Error("admin API: authenticating a request", "err", err)
			writeAdminError(w, http.StatusInternalServerError, errors.New("authentication failed; the origin's log has the details"))
			return
		case err != nil:
			log.Info("admin API: bad credentials", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			w.Header().Set("WWW-Authenticate", `Basic realm="shoal admin"`)
			writeAdminError(w, http.StatusUnauthorized, errors.New("invalid credentials: the user name, password or token was not accepted"))
			return
		case sub.Anonymous():
			w.Header().Set("WWW-Authenticate", `Basic realm="shoal admin"`)
			writeAdminError(w, http.StatusUnauthorized, errors.New(
				"the admin API needs credentials allowed the admin action (shoalctl: --admin-user and $SHOAL_ADMIN_PASSWORD)"))
			return
		}
		if d := a.Decide(sub, auth.AdminRepository, auth.Admin); !d.Allowed {
			log.Info("admin API: denied", "path", r.URL.Path, "user", sub.User, "addr", sub.Addr, "reason", d.Reason())
			writeAdminError(w, http.StatusForbidden, fmt.Errorf("user %s is not allowed the admin action", shortQuote(sub.User)))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkResult is the answer of GET /admin/v1/auth/check.
type checkResult struct {
	Allowed bool `json:"allowed"`
	// Rule is the index of the deciding rule in the auth config's rules,
	// -1 when none matched.
	Rule   int    `json:"rule"`
	Reason string `json:"reason"`
}

// authCheckHandler answers GET /admin/v1/auth/check?user=U&repository=R&
// action=A[&addr=IP][&cert=NAME...]: what the rules decide for that user
// (empty: anonymous) coming from addr with those certificate names, without
// their password, so that an operator can test a rule change.
func authCheckHandler(a *auth.Authorizer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeAdminError(w, http.StatusMethodNotAllowed, errors.New("method not allowed: use GET"))
			return
		}
		if a == nil {
			writeAdminError(w, http.StatusBadRequest, errors.New(
				"access control is off on this origin (no --auth-config and no auth: section): everyone who can reach it may pull, push and delete everything"))
			return
		}
		q := r.URL.Query()
		repo := q.Get("repository")
		if repo == "" {
			writeAdminError(w, http.StatusBadRequest, errors.New("repository is missing: ?repository=NAME (the admin API is "+auth.AdminRepository+")"))
			return
		}
		action := auth.Action(q.Get("action"))
		switch action {
		case auth.Pull, auth.Push, auth.Delete, auth.Admin:
		default:
			writeAdminError(w, http.StatusBadRequest, fmt.Errorf("action %s: want pull, push, delete or admin", shortQuote(string(action))))
			return
		}
		var addr netip.Addr
		if s := q.Get("addr"); s != "" {
			var err error
			if addr, err = netip.ParseAddr(s); err != nil {
				writeAdminError(w, http.StatusBadRequest, fmt.Errorf("addr %s: want an IP address", shortQuote(s)))
				return
			}
		}
		d := a.Check(q.Get("user"), addr, q["cert"], repo, action)
		writeAdminJSON(w, http.StatusOK, checkResult{Allowed: d.Allowed, Rule: d.Rule, Reason: d.Reason()})
	})
}

// writeAdminJSON and writeAdminError answer as the gc admin handler does:
// indented JSON, errors as {"error": "..."}.
func writeAdminJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to tell it
}

func writeAdminError(w http.ResponseWriter, code int, err error) {
	writeAdminJSON(w, code, map[string]string{"error": err.Error()})
}

// shortQuote quotes a client-supplied value for a message, cut short.
func shortQuote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strconv.Quote(s)
}
