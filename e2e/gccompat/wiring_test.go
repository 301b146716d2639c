package gccompat

import (
	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/origin"
)

// The origin's delete operations are what retention deletes through
// (gc.APIDeleter{Driver: driver, API: server}); this breaks the build when
// either side changes shape.
var _ gc.RegistryAPI = (*origin.Server)(nil)
