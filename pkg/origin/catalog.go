package origin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	ocispecs "github.com/opencontainers/image-spec/specs-go"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/internal/ociapi"
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
			return nil, 0, false, &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodePaginationNumberInvalid,
				Message: "invalid n " + ociapi.Quote(ns) + ": want a non-negative integer"}
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

func (s *Server) handleTags(w http.ResponseWriter, r *http.Request, rt ociapi.Route) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errMethod(r)
	}
	ctx := r.Context()
	tags, err := s.listTags(ctx, rt.Name)
	if err != nil {
		if !isNotFound(err) {
			return err
		}
		if _, err := s.driver.Stat(ctx, repoPath(rt.Name)); err != nil {
			if isNotFound(err) {
				return ociapi.NameUnknown(rt.Name)
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
		setNextLink(w, "/v2/"+rt.Name+"/tags/list", page, n)
	}
	return writeJSON(w, r, http.StatusOK, struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.Name, page})
}

func (s *Server) handleCatalog(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errMethod(r)
	}
	repos, err := s.catalog.repositories(r.Context(), s)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if !q.Has("n") {
		// A catalog can be large: without n, it comes a page at a time
		// as well, with a Link to the next.
		q.Set("n", strconv.Itoa(maxPageSize))
	}
	// With access control on, the catalog lists only what the caller may
	// pull; n and last count the listed names, not the hidden ones.
	page, n, more, err := paginate(repos, q, s.pullFilter(r))
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

// catalog is the list of repositories the catalog serves: walked from
// storage at most once per CatalogTTL, by one walk that every request
// arriving meanwhile waits for, and bounded by MaxCatalogEntries. Walking
// the repository tree costs a storage call per directory, so a walk per
// request would let anyone who can reach the registry load the storage at
// will. Repositories this node creates are added at once, so a client sees
// its own push; those created through other nodes appear within the TTL.
type catalog struct {
	walks singleflight.Group

	mu     sync.Mutex
	repos  []string // sorted; never changed in place, callers share it
	walked time.Time
	valid  bool
	// added: repositories this node created, and when, kept until a walk
	// that started after their creation has seen them.
	added map[string]time.Time
}

// repositories returns the sorted repository names, from the cache while it
// is fresh. Callers must not change the slice.
func (c *catalog) repositories(ctx context.Context, s *Server) ([]string, error) {
	if repos, ok := c.fresh(s); ok {
		return repos, nil
	}
	ch := c.walks.DoChan("walk", func() (any, error) {
		if repos, ok := c.fresh(s); ok {
			return repos, nil // a walk ended between the look above and this one
		}
		// The walk serves every request waiting for it: it must not end
		// with the one that started it.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), catalogWalkTimeout)
		defer cancel()
		start := s.now()
		repos, err := s.walkRepositories(wctx)
		if err != nil {
			return nil, err
		}
		return c.store(repos, start), nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.([]string), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fresh returns the cached list while it is younger than the TTL.
func (c *catalog) fresh(s *Server) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.repos, c.valid && s.now().Sub(c.walked) < s.cfg.CatalogTTL
}

// catalogWalkTimeout bounds one walk of the repository tree.
const catalogWalkTimeout = 2 * time.Minute

// store keeps the result of a walk that started at start, with the
// repositories this node created that the walk may have missed.
func (c *catalog) store(repos []string, start time.Time) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, at := range c.added {
		if at.Before(start) {
			delete(c.added, name) // the walk saw it
			continue
		}
		if i, found := slices.BinarySearch(repos, name); !found {
			repos = slices.Insert(repos, i, name)
		}
	}
	c.repos, c.walked, c.valid = repos, start, true
	return repos
}

// add records that this node created repository name (started an upload,
// linked a blob or stored a manifest there).
func (c *catalog) add(s *Server, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.valid {
		i, found := slices.BinarySearch(c.repos, name)
		if found {
			return
		}
		// Copy on write: requests may be paging through the old slice.
		c.repos = slices.Insert(slices.Clone(c.repos), i, name)
	}
	if c.added == nil {
		c.added = make(map[string]time.Time)
	}
	if len(c.added) < maxCatalogAdded {
		c.added[name] = s.now()
	}
}

// maxCatalogAdded bounds the names remembered between walks; past it, new
// repositories wait for the next walk to be listed.
const maxCatalogAdded = 10000

// errCatalogFull stops a walk that found MaxCatalogEntries repositories.
var errCatalogFull = errors.New("catalog full")

// walkRepositories lists the repositories in storage, sorted, at most
// MaxCatalogEntries of them: a directory under repositories/ is one when it
// holds _layers, _manifests or _uploads.
func (s *Server) walkRepositories(ctx context.Context) ([]string, error) {
	var repos []string
	err := s.driver.Walk(ctx, reposPrefix, func(fi storage.FileInfo) error {
		if !fi.IsDir() {
			return nil
		}
		base := fi.Path()[strings.LastIndexByte(fi.Path(), '/')+1:]
		if strings.HasPrefix(base, "_") {
			repo := strings.TrimPrefix(fi.Path()[:len(fi.Path())-len(base)-1], reposPrefix+"/")
			if len(repos) == 0 || repos[len(repos)-1] != repo {
				if len(repos) == s.cfg.MaxCatalogEntries {
					return errCatalogFull
				}
				repos = append(repos, repo)
			}
			return storage.ErrSkipDir
		}
		return nil
	})
	if errors.Is(err, errCatalogFull) {
		s.log.Warn("the catalog lists only the first repositories found: raise maxCatalogEntries to list them all",
			"maxCatalogEntries", s.cfg.MaxCatalogEntries)
		err = nil
	}
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("walking the repositories for the catalog: %w", err)
	}
	slices.Sort(repos)
	return slices.Compact(repos), nil
}
