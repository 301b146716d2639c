package piecestore

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// reload loads the blobs left by a previous run. A blob directory that
// does not check out (unknown digest name, metainfo missing or for another
// blob, data file of the wrong size, bad bitfield) is deleted. Pieces an
// incomplete blob lists are verified again, since its bitfield is written
// without a sync; those that fail are forgotten. Complete blobs are
// trusted: they were verified and synced before they were moved.
func (s *Store) reload() error {
	type found struct {
		b     *blob
		mtime time.Time
	}
	var all []found
	for _, complete := range []bool{true, false} {
		sub := incompleteDir
		if complete {
			sub = completeDir
		}
		algs, err := os.ReadDir(filepath.Join(s.dir, sub))
		if err != nil {
			return err
		}
		for _, alg := range algs {
			algDir := filepath.Join(s.dir, sub, alg.Name())
			if !digest.Algorithm(alg.Name()).Available() {
				s.drop(algDir, fmt.Errorf("unknown digest algorithm %q", alg.Name()))
				continue
			}
			entries, err := os.ReadDir(algDir)
			if err != nil {
				s.drop(algDir, fmt.Errorf("not an algorithm directory: %w", err))
				continue
			}
			for _, e := range entries {
				dir := filepath.Join(algDir, e.Name())
				d := digest.NewDigestFromEncoded(digest.Algorithm(alg.Name()), e.Name())
				if err := d.Validate(); err != nil || !e.IsDir() {
					s.drop(dir, fmt.Errorf("not a blob directory: %v", err))
					continue
				}
				if _, dup := s.blobs[d]; dup {
					// Complete and incomplete both: a crash after the
					// rename's copy? Keep the complete one.
					s.drop(dir, errors.New("blob already loaded complete"))
					continue
				}
				b, err := loadBlob(dir, d, complete)
				if err != nil {
					s.drop(dir, err)
					continue
				}
				s.blobs[d] = b
				s.used += b.meta.Size
				info, _ := e.Info()
				var mtime time.Time
				if info != nil {
					mtime = info.ModTime()
				}
				all = append(all, found{b, mtime})
			}
		}
	}
	// The LRU order starts as the order the blobs were last changed.
	slices.SortFunc(all, func(x, y found) int { return cmp.Compare(x.mtime.UnixNano(), y.mtime.UnixNano()) })
	for _, f := range all {
		s.touchLocked(f.b)
	}
	s.log.Info("piece store loaded", "dir", s.dir, "blobs", len(all), "bytes", s.used, "quota", s.quota)
	return nil
}

func (s *Store) drop(path string, why error) {
	s.log.Warn("piece store: dropping what a previous run left", "path", path, "reason", why)
	if err := os.RemoveAll(path); err != nil {
		s.log.Warn("piece store: deleting", "path", path, "err", err)
	}
}

func loadBlob(dir string, d digest.Digest, complete bool) (*blob, error) {
	enc, err := os.ReadFile(filepath.Join(dir, metainfoFile))
	if err != nil {
		return nil, fmt.Errorf("reading metainfo: %w", err)
	}
	m := new(metainfo.Metainfo)
	if err := m.UnmarshalBinary(enc); err != nil {
		return nil, err
	}
	if m.Digest != d {
		return nil, fmt.Errorf("metainfo describes %s", m.Digest)
	}
	f, err := os.OpenFile(filepath.Join(dir, dataFile), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening data: %w", err)
	}
	b := &blob{meta: m, f: f, dir: dir, complete: complete, changed: make(chan struct{})}
	if err := b.check(); err != nil {
		_ = f.Close()
		return nil, err
	}
	return b, nil
}

// check validates a reloaded blob's data file and bitfield, re-verifying
// the pieces an incomplete one lists.
func (b *blob) check() error {
	m := b.meta
	st, err := b.f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != m.Size {
		return fmt.Errorf("data file has %d bytes, want %d", st.Size(), m.Size)
	}
	if b.complete {
		b.have = metainfo.NewBitfield(m.NumPieces())
		b.have.SetAll()
		return nil
	}
	raw, err := os.ReadFile(filepath.Join(b.dir, bitfieldFile))
	if err != nil {
		return fmt.Errorf("reading bitfield: %w", err)
	}
	if b.have, err = metainfo.ParseBitfield(raw, m.NumPieces()); err != nil {
		return err
	}
	buf := make([]byte, 0, m.PieceLength)
	for i := range m.NumPieces() {
		if !b.have.Has(i) {
			continue
		}
		buf = buf[:m.PieceSize(i)]
		if _, err := b.f.ReadAt(buf, m.PieceOffset(i)); err != nil || m.Verify(i, buf) != nil {
			b.have.Clear(i)
		}
	}
	if !bytes.Equal(raw, b.have.Bytes()) {
		if _, err := b.bitfieldWriteLocked(); err != nil {
			return fmt.Errorf("rewriting bitfield: %w", err)
		}
	}
	return nil
}
