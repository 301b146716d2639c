package origin

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	ocispecs "github.com/opencontainers/image-spec/specs-go"

	"github.com/shoal-dev/shoal/pkg/storage"
)

var specsVersioned = ocispecs.Versioned{SchemaVersion: 2}

// maxPageSize bounds n in paginated lists.
const maxPageSize = 10000

// paginate applies the spec's n and last parameters to a sorted list,
// keeping only the names keep accepts (every name when keep is nil). It
// returns the page, the page size asked for, and whether more kept names
// follow. Filtering while paging, rather than paging a filtered copy, asks
// keep only about the names up to the end of the page.
func paginate(all []string, q url.Values, keep func(string) bool) ([]string, int, bool, error) {
	n := -1
	if ns := q.Get("n"); ns != "" {
		v, err := strconv.Atoi(ns)
		if err != nil || v < 0 {
			return nil, 0, false, &apiError{Status: http.StatusBadRequest, Code: "PAGINATION_NUMBER_INVALID",
				Message: "invalid n " + quoteShort(ns) + ": want a non-negative integer"}
		}
		n = min(v, maxPageSize)
	}
	if last := q.Get("last"); last != "" {
		i := sort.SearchStrings(all, last)
		if i < len(all) && all[i] == last {
			i++
		}
		all = all[i:]
	}
	page := []string{}
	for _, name := range all {
		if keep != nil && !keep(name) {
			continue
		}
		if n >= 0 && len(page) == n {
			return page, n, true, nil
		}
		page = append(page, name)
	}
	return page, n, false, nil
}

func setNextLink(w http.ResponseWriter, base string, page []string, n int) {
	if len(page) == 0 {
		return
	}
	q := url.Values{}
	q.Set("n", strconv.Itoa(n))
	q.Set("last", page[len(page)-1])
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, base, q.Encode()))
}

func (s *Server) handleTags(w http.ResponseWriter, r *http.Request, rt route) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errMethod(r)
	}
	ctx := r.Context()
	tags, err := s.listTags(ctx, rt.name)
	if err != nil {
		if !isNotFound(err) {
			return err
		}
		if _, err := s.driver.Stat(ctx, repoPath(rt.name)); err != nil {
			if isNotFound(err) {
				return errNameUnknown(rt.name)
			}
			return err
		}
		tags = []string{}
	}
	page, n, more, err := paginate(tags, r.URL.Query(), nil)
	if err != nil {
		return err
	}
	if more {
		setNextLink(w, "/v2/"+rt.name+"/tags/list", page, n)
	}
	return writeJSON(w, r, http.StatusOK, struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.name, page})
}

func (s *Server) handleCatalog(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errMethod(r)
	}
	repos, err := s.Repositories(r)
	if err != nil {
		return err
	}
	// With access control on, the catalog lists only what the caller may
	// pull; n and last count the listed names, not the hidden ones.
	page, n, more, err := paginate(repos, r.URL.Query(), s.pullFilter(r))
	if err != nil {
		return err
	}
	if more {
		setNextLink(w, "/v2/_catalog", page, n)
	}
	return writeJSON(w, r, http.StatusOK, struct {
		Repositories []string `json:"repositories"`
	}{page})
}

// Repositories lists every repository, sorted: a directory under
// repositories/ is one when it holds _layers, _manifests or _uploads.
func (s *Server) Repositories(r *http.Request) ([]string, error) {
	var repos []string
	err := s.driver.Walk(r.Context(), reposPrefix, func(fi storage.FileInfo) error {
		if !fi.IsDir() {
			return nil
		}
		base := fi.Path()[strings.LastIndexByte(fi.Path(), '/')+1:]
		if strings.HasPrefix(base, "_") {
			repo := strings.TrimPrefix(fi.Path()[:len(fi.Path())-len(base)-1], reposPrefix+"/")
			repos = append(repos, repo)
			return storage.ErrSkipDir
		}
		return nil
	})
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	slices.Sort(repos)
	return slices.Compact(repos), nil
}
