package gc

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// Report is what a run deleted, or would delete in a dry run.
type Report struct {
	Holder     string    `json:"holder"`
	Token      uint64    `json:"token"`
	DryRun     bool      `json:"dryRun"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
	// MarkStart is T0: blobs written or linked after T0 minus Grace are
	// never deleted by this run.
	MarkStart time.Time `json:"markStart"`
	Error     string    `json:"error,omitempty"`

	Tags      []TagDeletion      `json:"tags"`
	Manifests []ManifestDeletion `json:"manifests"`
	// SkippedTags and SkippedManifests were planned but changed before
	// their deletion (a push moved the tag or re-pushed the manifest).
	SkippedTags      []TagDeletion      `json:"skippedTags,omitempty"`
	SkippedManifests []ManifestDeletion `json:"skippedManifests,omitempty"`

	BlobsTotal  int            `json:"blobsTotal"`
	BlobsMarked int            `json:"blobsMarked"`
	Blobs       []BlobDeletion `json:"blobs"`
	// BlobsSpared were candidates that the re-check before deletion found
	// referenced or freshly written.
	BlobsSpared []digest.Digest `json:"blobsSpared,omitempty"`
	BytesFreed  int64           `json:"bytesFreed"`
	LayerLinks  []RepoDigest    `json:"layerLinks"`
	Uploads     []UploadPurge   `json:"uploads"`
	// MissingManifests are revision links whose manifest data is absent.
	MissingManifests []RepoDigest `json:"missingManifests,omitempty"`

	StorageCalls StorageCalls `json:"storageCalls"`
	// Phases is the wall time spent in each phase.
	Phases map[Phase]Duration `json:"phases"`
}

// BlobDeletion is a blob the sweep deleted or would delete.
type BlobDeletion struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// UploadPurge is an abandoned upload session.
type UploadPurge struct {
	Repo      string    `json:"repo"`
	ID        string    `json:"id"`
	StartedAt time.Time `json:"startedAt"`
}

// Phase names what a run is doing.
type Phase string

// The phases of a run, in order.
const (
	PhaseIdle      Phase = "idle"
	PhaseLease     Phase = "lease"
	PhaseInventory Phase = "inventory"
	PhaseRetention Phase = "retention"
	PhaseMark      Phase = "mark"
	PhaseSweep     Phase = "sweep"
	PhaseUploads   Phase = "uploads"
)

// Progress is a running collection's state.
type Progress struct {
	Phase        Phase     `json:"phase"`
	DryRun       bool      `json:"dryRun"`
	StartedAt    time.Time `json:"startedAt"`
	Repositories int       `json:"repositories"`
	Manifests    int       `json:"manifests"`
	BlobsScanned int       `json:"blobsScanned"`
	Candidates   int       `json:"candidates"`
	BlobsDeleted int       `json:"blobsDeleted"`
	TagsDeleted  int       `json:"tagsDeleted"`
	ManifestsDel int       `json:"manifestsDeleted"`
}

// Status is what GET /admin/v1/gc returns.
type Status struct {
	Running  bool     `json:"running"`
	Progress Progress `json:"progress"`
	// Last is this node's last finished run.
	Last *Report `json:"last,omitempty"`
}
