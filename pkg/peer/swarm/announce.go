package swarm

import (
	"context"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

var errNoTracker = errors.New("no tracker configured")

// announce tells the tracker this agent holds d: every piece when have is
// nil, else the pieces in have. It fails when every tracker does; callers
// carry on without peers.
func (s *Swarm) announce(ctx context.Context, d digest.Digest, ev trackerpb.Event, have *metainfo.Bitfield) (*trackerpb.AnnounceResponse, error) {
	if s.tracker == nil {
		return nil, errNoTracker
	}
	req := &trackerpb.AnnounceRequest{
		Digest:   d.String(),
		PeerId:   s.cfg.PeerID,
		Addr:     s.cfg.AdvertiseAddr,
		Event:    ev,
		Locality: s.cfg.Locality,
		NumWant:  uint32(max(s.cfg.NumWant, 0)),
	}
	if have == nil {
		req.Complete = true
	} else {
		req.Bitfield = have.Bytes()
	}
	start := time.Now()
	resp, err := s.tracker.Announce(ctx, req)
	result := "ok"
	if err != nil {
		result = "failed"
		s.log.Warn("announce failed; carrying on without the tracker", "digest", d, "event", ev.String(), "err", err)
	}
	s.metrics.announces.WithLabelValues(eventLabel(ev), result).Inc()
	s.metrics.announceDuration.WithLabelValues(result).Observe(time.Since(start).Seconds())
	return resp, err
}

func eventLabel(e trackerpb.Event) string {
	switch e {
	case trackerpb.Event_EVENT_STARTED:
		return "started"
	case trackerpb.Event_EVENT_COMPLETED:
		return "completed"
	case trackerpb.Event_EVENT_STOPPED:
		return "stopped"
	}
	return "none"
}
