package piecestore

import (
	"cmp"
	"os"
	"slices"
)

// makeRoomLocked evicts blobs not in use until size more bytes fit in the
// quota: complete blobs first, least recently used first, then incomplete
// ones (downloads nobody is running any more). It reports whether the
// room was made; the victims are already out of the map and must be passed
// to dispose after the lock is released, whether or not it succeeded.
func (s *Store) makeRoomLocked(size int64) (victims []*blob, ok bool) {
	if s.used+size <= s.quota {
		return nil, true
	}
	var idle []*blob
	for _, b := range s.blobs {
		if b.refs == 0 && !b.completing {
			idle = append(idle, b)
		}
	}
	slices.SortFunc(idle, func(x, y *blob) int {
		if x.complete != y.complete {
			if x.complete {
				return -1
			}
			return 1
		}
		return cmp.Compare(x.lastUse, y.lastUse)
	})
	var freeable int64
	for _, b := range idle {
		freeable += b.meta.Size
	}
	if s.used-freeable+size > s.quota {
		// Evicting everything idle would not be enough: keep the cache.
		return nil, false
	}
	for _, b := range idle {
		if s.used+size <= s.quota {
			break
		}
		victims = append(victims, s.removeLocked(b))
	}
	return victims, true
}

// removeLocked takes b out of the store: readers waiting on it wake with
// ErrRemoved, its file is closed when its last user goes. It returns b for
// dispose, or nil if it was already removed.
func (s *Store) removeLocked(b *blob) *blob {
	if b.removed {
		return nil
	}
	b.removed = true
	b.gone.Store(true)
	delete(s.blobs, b.meta.Digest)
	s.used -= b.meta.Size
	b.notifyLocked()
	if b.refs == 0 {
		_ = b.f.Close()
		s.dropRecent(b)
	}
	return b
}

// dispose deletes the files of removed blobs and reports them to onEvict.
// It runs without the lock: deleting a large file takes time.
func (s *Store) dispose(victims []*blob) {
	for _, b := range victims {
		if b == nil {
			continue
		}
		s.mu.Lock()
		dir := b.dir
		s.mu.Unlock()
		if err := os.RemoveAll(dir); err != nil {
			s.log.Warn("piece store: deleting an evicted blob", "digest", b.meta.Digest, "dir", dir, "err", err)
		} else {
			s.log.Debug("piece store: blob evicted", "digest", b.meta.Digest, "size", b.meta.Size, "complete", b.complete)
		}
		if s.onEvict != nil {
			s.onEvict(b.meta.Digest)
		}
	}
}
