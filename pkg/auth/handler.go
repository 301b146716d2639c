package auth

import "net/http"

// TokenHandler serves the token endpoint (TokenPath).
func (a *Authorizer) TokenHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not yet", http.StatusNotImplemented)
	})
}
