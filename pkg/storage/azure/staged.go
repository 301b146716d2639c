package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/internal/objectstore"
)

// staged makes Azure's staged writes (storage.StagedWriter) as a block
// blob: its blocks are staged (Put Block) as the bytes come and become the
// blob in one step at Commit (Put Block List); a body of less than one
// block is one Put Blob at Commit. A blob's staged blocks are no part of
// it until they are committed: a blob that has only those does not exist
// for a reader or a listing, and a blob already at the name keeps its
// content. (The reference driver's writers write append blobs, whose
// bytes are the blob as soon as they are appended: they cannot stage.)
//
// Nothing is kept in the stage: Azure discards the uncommitted blocks of a
// blob after a week by itself, so a write that is cancelled, or whose
// process is killed, leaves nothing visible, and deleting the blob to be
// rid of them sooner could delete a blob that another push committed
// meanwhile.
type staged struct {
	container *container.Client
	prefix    string
	// errs maps errors as the driver's own calls map them, and gives
	// the writer the end states of the driver's writers.
	errs *objectstore.Driver
}

// stagedBlockSize is the size of a staged write's blocks: twice the
// reference writer's 4 MiB appends, for half the requests.
const stagedBlockSize = 8 << 20

// stagedBlocksInFlight is how many blocks of one staged write are sent at
// once (objectstore.PartWriter): an append blob grows in order, one
// append at a time, but blocks can be staged side by side.
const stagedBlocksInFlight = 2

// StagedWriter opens a staged writer of p (storage.StagedWriter).
func (s *staged) StagedWriter(ctx context.Context, p, stage string) (storage.FileWriter, error) {
	return s.errs.OpenStaged(p, stage, func() (storage.FileWriter, error) {
		b := &stagedBlob{blob: s.container.NewBlockBlobClient(blobName(s.prefix, p))}
		if _, err := rand.Read(b.id[:16]); err != nil {
			return nil, err
		}
		return objectstore.NewPartWriter(ctx, b, stagedBlockSize, stagedBlocksInFlight), nil
	})
}

// stagedBlob is the blocks of one staged write (objectstore.Parts).
type stagedBlob struct {
	blob *blockblob.Client
	// id is the writer's random 16 bytes, then a block's number: block
	// ids of one length, as Azure requires of all the blocks of a blob
	// (those a cancelled write left included), and unique to the writer.
	id [20]byte
}

func (b *stagedBlob) blockID(num int) string {
	id := b.id
	binary.BigEndian.PutUint32(id[16:], uint32(num))
	return base64.StdEncoding.EncodeToString(id[:])
}

func (b *stagedBlob) Start(context.Context) error { return nil }

// Part stages block num.
func (b *stagedBlob) Part(ctx context.Context, num int, p []byte) error {
	_, err := b.blob.StageBlock(ctx, b.blockID(num), streaming.NopCloser(bytes.NewReader(p)), nil)
	return err
}

// Complete commits blocks 1..n as the blob.
func (b *stagedBlob) Complete(ctx context.Context, n int) error {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = b.blockID(i + 1)
	}
	_, err := b.blob.CommitBlockList(ctx, ids, nil)
	return err
}

// PutWhole writes the blob in one Put Blob.
func (b *stagedBlob) PutWhole(ctx context.Context, p []byte) error {
	_, err := b.blob.Upload(ctx, streaming.NopCloser(bytes.NewReader(p)), nil)
	return err
}

// Abort leaves the staged blocks to Azure's expiry (see staged).
func (b *stagedBlob) Abort(context.Context) error { return nil }
