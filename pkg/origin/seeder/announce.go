package seeder

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// stopAnnounceTimeout bounds the EVENT_STOPPED sent when a blob stops being
// seeded: a tracker that does not answer forgets the entry at its TTL.
const stopAnnounceTimeout = time.Second

type announceState struct {
	lastUsed time.Time
}

// track makes sure an owned blob is announced to the trackers, starting a
// loop that re-announces it at the tracker's interval for as long as the
// node seeds it. Tracker failures are logged and retried, never returned:
// agents also reach origins without trackers.
func (s *Server) track(d digest.Digest) {
	if s.announcer == nil {
		return
	}
	s.annMu.Lock()
	defer s.annMu.Unlock()
	if st, ok := s.announce[d]; ok {
		st.lastUsed = time.Now()
		return
	}
	if s.ctx.Err() != nil {
		return
	}
	s.announce[d] = &announceState{lastUsed: time.Now()}
	s.m.announcedBlobsNow.Inc()
	s.tasks.Add(1)
	go s.announceLoop(d)
}

// seeding reports whether d is still to be announced: this node owns it
// (membership may have changed) and holds it in the cache, or, for a blob
// too large for the cache, was asked for it recently.
func (s *Server) seeding(d digest.Digest) bool {
	if !s.owns(d) {
		return false
	}
	if s.cache.has(d) {
		return true
	}
	s.annMu.Lock()
	defer s.annMu.Unlock()
	st, ok := s.announce[d]
	return ok && time.Since(st.lastUsed) < s.cfg.AnnounceIdle
}

func (s *Server) announceLoop(d digest.Digest) {
	defer s.tasks.Done()
	event := trackerpb.Event_EVENT_COMPLETED
	announced, failing := false, false
	timer := time.NewTimer(0)
	defer timer.Stop()
loop:
	for {
		select {
		case <-s.ctx.Done():
			break loop
		case <-timer.C:
		}
		if !s.seeding(d) {
			break loop
		}
		resp, err := s.announcer.Announce(s.ctx, &trackerpb.AnnounceRequest{
			Digest: d.String(), PeerId: s.peerID, Addr: s.advertise, Complete: true, IsOrigin: true, Event: event,
		})
		interval := s.cfg.AnnounceInterval
		switch {
		case err != nil && s.ctx.Err() != nil:
			break loop
		case err != nil:
			s.m.announces.WithLabelValues("error").Inc()
			if !failing {
				s.log.Warn("seeder: announcing to trackers failed; agents still reach the origin directly; retrying", "digest", d, "retry", interval.String(), "err", err)
			} else {
				s.log.Debug("seeder: announcing to trackers failed", "digest", d, "err", err)
			}
			failing = true
		default:
			s.m.announces.WithLabelValues("ok").Inc()
			if failing {
				s.log.Info("seeder: announcing to trackers works again", "digest", d)
			}
			announced, failing = true, false
			event = trackerpb.Event_EVENT_UNSPECIFIED
			if iv := resp.GetInterval(); iv != nil && iv.AsDuration() > 0 {
				interval = iv.AsDuration()
			}
		}
		timer.Reset(interval)
	}
	s.annMu.Lock()
	delete(s.announce, d)
	s.annMu.Unlock()
	s.m.announcedBlobsNow.Dec()
	if announced {
		ctx, cancel := context.WithTimeout(context.Background(), stopAnnounceTimeout)
		defer cancel()
		if _, err := s.announcer.Announce(ctx, &trackerpb.AnnounceRequest{
			Digest: d.String(), PeerId: s.peerID, Addr: s.advertise, Complete: true, IsOrigin: true, Event: trackerpb.Event_EVENT_STOPPED,
		}); err != nil {
			s.log.Debug("seeder: announcing stop failed; the tracker forgets this origin at its TTL", "digest", d, "err", err)
		}
	}
}
