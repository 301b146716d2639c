package main

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/adminapi"
	"github.com/shoal-dev/shoal/pkg/cluster"
	"github.com/shoal-dev/shoal/pkg/origin"
	"github.com/shoal-dev/shoal/pkg/origin/seeder"
)

func membersJSON(ms []cluster.Member) []adminapi.Member {
	out := make([]adminapi.Member, len(ms))
	for i, m := range ms {
		out[i] = adminapi.Member{Name: m.Name, Seeder: m.Addr}
	}
	return out
}

// clusterHandler answers GET /admin/v1/cluster: this node's view of the
// origin cluster, and with ?digest= the blob's owners. cfg is the seeder's
// configuration as started (flags applied).
func clusterHandler(sd seeding, cfg seeder.Config) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeAdminError(w, http.StatusMethodNotAllowed, errors.New("method not allowed: use GET"))
			return
		}
		st := adminapi.ClusterStatus{Members: []adminapi.Member{}, Trackers: cfg.Tracker.Trackers}
		if st.Trackers == nil {
			st.Trackers = []string{}
		}
		d := r.URL.Query().Get("digest")
		if d != "" {
			if _, err := digest.Parse(d); err != nil {
				writeAdminError(w, http.StatusBadRequest, fmt.Errorf("digest %s: %v", shortQuote(d), err))
				return
			}
			st.Digest = d
		}
		if sd.members != nil {
			st.Seeder, st.Node, st.Replicas = true, sd.members.Self().Name, cfg.Replicas
			st.Members = membersJSON(sd.members.Members())
			if d != "" {
				st.Owners = membersJSON(sd.members.Owners(d, cfg.Replicas))
			}
		}
		writeAdminJSON(w, http.StatusOK, st)
	})
}

// preheatParallel is how many blobs one preheat warms at once: enough to
// keep several owners' disks busy, few enough not to flood storage.
const preheatParallel = 4

// preheatHandler answers POST /admin/v1/preheat?repository=R&reference=REF:
// it resolves the manifest (every platform's for an index) and has the
// owners of each blob read it from storage and hold its metainfo, so that
// the first swarm of a rollout is not bound by storage reads. It answers
// once every blob is warm (or failed), with what each owner did.
func preheatHandler(srv *origin.Server, sd seeding) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			writeAdminError(w, http.StatusMethodNotAllowed, errors.New("method not allowed: use POST"))
			return
		}
		if sd.server == nil {
			writeAdminError(w, http.StatusConflict, errors.New(
				"this origin runs no seeder (no --tracker nor --seeder-listen): there is no P2P swarm to preheat for"))
			return
		}
		q := r.URL.Query()
		repo, ref := q.Get("repository"), q.Get("reference")
		if repo == "" || ref == "" {
			writeAdminError(w, http.StatusBadRequest, errors.New("repository and reference are required: ?repository=NAME&reference=TAG-OR-DIGEST"))
			return
		}
		md, descs, err := srv.ImageBlobs(r.Context(), repo, ref)
		switch {
		case errors.Is(err, origin.ErrImageUnknown):
			writeAdminError(w, http.StatusNotFound, err)
			return
		case err != nil:
			writeAdminError(w, http.StatusInternalServerError, err)
			return
		}
		res := adminapi.PreheatResult{Repository: repo, Reference: ref, Manifest: md.String(), Blobs: make([]adminapi.PreheatBlob, len(descs))}
		sem := make(chan struct{}, preheatParallel)
		var wg sync.WaitGroup
		for i, desc := range descs {
			res.Blobs[i] = adminapi.PreheatBlob{Digest: desc.Digest.String(), Size: desc.Size, MediaType: desc.MediaType, Owners: []adminapi.PreheatOwner{}}
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				warmed, err := sd.server.Preheat(r.Context(), desc.Digest)
				if err != nil {
					res.Blobs[i].Error = err.Error()
					return
				}
				for _, o := range warmed {
					po := adminapi.PreheatOwner{Name: o.Owner}
					if o.Err != nil {
						po.Error = o.Err.Error()
					}
					res.Blobs[i].Owners = append(res.Blobs[i].Owners, po)
				}
			})
		}
		wg.Wait()
		writeAdminJSON(w, http.StatusOK, res)
	})
}
