package gc

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// NewAdminHandler serves the GC admin API on whatever path the origin
// mounts it (/admin/v1/gc), behind the origin's admin authentication:
//
//	POST   ?dryRun=true|false  start a run in the background (202, or 409 when running)
//	GET                        status: progress of the current run, last report
//	DELETE                     cancel the run in progress (202)
func NewAdminHandler(r *Runner) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.Method {
		case http.MethodGet, http.MethodHead:
			st := r.Status()
			if st.Last == nil {
				last, err := r.LastReport(req.Context())
				if err != nil {
					writeError(w, http.StatusInternalServerError, err)
					return
				}
				st.Last = last
			}
			writeJSON(w, http.StatusOK, st)
		case http.MethodPost:
			dry := false
			if v := req.URL.Query().Get("dryRun"); v != "" {
				b, err := strconv.ParseBool(v)
				if err != nil {
					writeError(w, http.StatusBadRequest, errors.New("dryRun must be true or false"))
					return
				}
				dry = b
			}
			if err := r.Start(req.Context(), RunOptions{DryRun: dry}); err != nil {
				code := http.StatusInternalServerError
				if errors.Is(err, ErrRunning) {
					code = http.StatusConflict
				}
				writeError(w, code, err)
				return
			}
			writeJSON(w, http.StatusAccepted, r.Status())
		case http.MethodDelete:
			r.Cancel()
			writeJSON(w, http.StatusAccepted, r.Status())
		default:
			w.Header().Set("Allow", "GET, HEAD, POST, DELETE")
			writeError(w, http.StatusMethodNotAllowed, errors.New("method not allowed"))
		}
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to tell it
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
