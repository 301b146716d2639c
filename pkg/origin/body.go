package origin

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// errBodyStalled is what reading a request body returns once the client
// has sent nothing for Config.BodyTimeout.
var errBodyStalled = errors.New("request body stalled")

// progressBody reads a request body under a progress deadline: the
// connection's read deadline is pushed forward as bytes arrive, so a body
// that stops for the timeout is cut, however long an honest one takes in
// all. Without it a client could hold a request (and everything it holds)
// open forever by sending nothing.
type progressBody struct {
	body    io.Reader
	rc      *http.ResponseController
	timeout time.Duration
	// set is when the deadline was last pushed forward: pushing it on
	// every read would cost a timer update per few kilobytes.
	set     time.Time
	stalled bool
	metric  func()
}

// watchBody returns r's body read under the progress deadline, and a func
// that lifts the deadline, to be called once the body is read: the
// connection's background read after the body must not hit it while the
// handler still works (net/http would cancel the request's context). With
// a zero timeout, or a connection that cannot set deadlines, the body is
// read as it is.
func (s *Server) watchBody(w http.ResponseWriter, r *http.Request, handler string) (io.Reader, func()) {
	if s.cfg.BodyTimeout <= 0 {
		return r.Body, func() {}
	}
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)); err != nil {
		return r.Body, func() {}
	}
	pb := &progressBody{body: r.Body, rc: rc, timeout: s.cfg.BodyTimeout, set: time.Now(),
		metric: func() { s.metrics.bodyTimeouts.WithLabelValues(handler).Inc() }}
	return pb, func() { _ = rc.SetReadDeadline(time.Time{}) }
}

func (p *progressBody) Read(b []byte) (int, error) {
	if p.stalled {
		return 0, errBodyStalled
	}
	if now := time.Now(); now.Sub(p.set) > p.timeout/8 {
		_ = p.rc.SetReadDeadline(now.Add(p.timeout))
		p.set = now
	}
	n, err := p.body.Read(b)
	if err != nil && isTimeout(err) {
		p.stalled = true
		p.metric()
		return n, fmt.Errorf("%w: nothing received for %s: %w", errBodyStalled, p.timeout, err)
	}
	return n, err
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// deadlineBody is a request body under the progress deadline for a handler
// that reads it its own way (the token endpoint's form): the deadline is
// lifted when the body ends.
type deadlineBody struct {
	io.Reader
	io.Closer
	lift func()
	once sync.Once
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err != nil {
		b.once.Do(b.lift)
	}
	return n, err
}
