package swarm

// addPendingLocked changes the bytes this stream has accepted for upload
// and not sent (c.mu held), in the swarm's uplink meter too. It never goes
// below zero, so a send racing a close cannot leave the backlog short.
//
// The meter turns away requests this host would not send within half the
// piece timeout (see conn.handle): without it a host on a slow link
// accepted every request (one piece at a time per stream, 16 queued per
// stream, dozens of streams); at 10 Mbit/s each of ~50 concurrent uploads
// crawled at ~25 KB/s, requesters timed out, asked again elsewhere, and
// the late chunks were discarded (2 GiB of 3 GiB received, 50 agents).
func (c *conn) addPendingLocked(d int64) {
	d = max(d, -c.pending)
	c.pending += d
	c.s.up.Add(d)
}
