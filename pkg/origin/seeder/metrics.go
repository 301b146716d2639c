package seeder

import "github.com/prometheus/client_golang/prometheus"

// metrics are the seeder's Prometheus series, all shoal_origin_seeder_*.
type metrics struct {
	egressBytes       prometheus.Counter
	servedBytes       *prometheus.CounterVec
	piecesServed      *prometheus.CounterVec
	piecesAgain       prometheus.Counter
	grantsFreed       *prometheus.CounterVec
	rejects           *prometheus.CounterVec
	metainfoComputed  prometheus.Counter
	metainfoRequests  *prometheus.CounterVec
	cacheHits         prometheus.Counter
	cacheMisses       prometheus.Counter
	cacheEvictions    prometheus.Counter
	cacheBytes        prometheus.Gauge
	storageReadBytes  prometheus.Counter
	streams           prometheus.Gauge
	handshaking       prometheus.Gauge
	uploads           prometheus.Gauge
	announces         *prometheus.CounterVec
	metainfoProxied   *prometheus.CounterVec
	refused           *prometheus.CounterVec
	announcedBlobsNow prometheus.Gauge
	capabilityDenied  *prometheus.CounterVec
	pieceBytes        *prometheus.CounterVec
	pieceConns        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "shoal", "origin_seeder"
	m := &metrics{
		egressBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "egress_bytes_total",
			Help: "Piece bytes sent to peers: on an Exchange stream every chunk once handed to the stream (pieces later cancelled included), on the piece data path a piece's bytes once written."}),
		servedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "served_bytes_total",
			Help: "Bytes of pieces sent whole, by where they were read from (cache: the local copy; storage: read directly)."}, []string{"source"}),
		piecesServed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pieces_served_total",
			Help: "Pieces sent whole, by where they were read from."}, []string{"source"}),
		piecesAgain: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pieces_sent_again_total",
			Help: "Piece sends started for a piece of a blob already sent (or being sent) while streams for the blob stayed open: after the superseeding window, after a cancelled send, or to the same agent again."}),
		grantsFreed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "superseed_grants_freed_total",
			Help: "Superseeding grants (a piece given to an agent, which other agents are sent to the swarm for) freed for the next agent asking, by reason: window_over (asked for once the piece's window had run out), send_incomplete (the send was cancelled or failed), connection_broken (the recipient's stream or piece connection broke), streams_closed (the blob's last stream or piece connection closed within the window)."}, []string{"reason"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rejects_total",
			Help: "Piece requests rejected, by reason (busy, not_held, at_peers)."}, []string{"reason"}),
		metainfoComputed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "metainfo_computed_total",
			Help: "Blobs whose metainfo this node computed and stored (once per blob in the cluster, barring races)."}),
		metainfoRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "metainfo_requests_total",
			Help: "GetMetainfo calls, by result (ok, not_found, invalid, denied, error)."}, []string{"result"}),
		metainfoProxied: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "metainfo_proxied_total",
			Help: "Missing metainfo asked of an owner node instead of computed here, by result (ok, error)."}, []string{"result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cache_hits_total",
			Help: "Uses of a blob already in (or being read into) the local cache."}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cache_misses_total",
			Help: "Blobs read from storage into the local cache."}),
		cacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cache_evictions_total",
			Help: "Blobs evicted from the local cache to stay under its quota."}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "cache_bytes",
			Help: "Bytes held or reserved in the local cache."}),
		storageReadBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "storage_read_bytes_total",
			Help: "Blob bytes read from storage by the seeder (cache fills, direct piece reads, metainfo computation)."}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "streams",
			Help: "Open Exchange streams."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "refused_total",
			Help: "Calls refused to protect the node, by reason: max_streams and per_connection (Exchange streams refused with RESOURCE_EXHAUSTED at maxStreams or maxStreamsPerConn), handshake_timeout (no handshake within handshakeTimeout), metainfo_rate (GetMetainfo over a client's coldMetainfoRate), piece_connections (piece data path connections beyond maxStreams), piece_handshake (piece data path connections whose TLS handshake failed or took longer than handshakeTimeout)."}, []string{"reason"}),
		handshaking: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "handshaking_streams",
			Help: "Exchange streams open and waiting for their handshake (ended at handshakeTimeout; not counted against maxStreams)."}),
		uploads: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "uploads",
			Help: "Pieces being sent now."}),
		announces: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "announces_total",
			Help: "Announces of owned blobs to trackers, by result (ok, error)."}, []string{"result"}),
		announcedBlobsNow: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "announced_blobs",
			Help: "Blobs this node currently announces as an origin seeder."}),
		capabilityDenied: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "capability_denied_total",
			Help: "GetMetainfo calls, Exchange streams and piece data path connections refused for want of a valid capability for the blob (or with a tracker's certificate), by rpc (get_metainfo, exchange, pieces)."}, []string{"rpc"}),
		pieceBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "piece_data_path_bytes_total",
			Help: "Piece bytes sent on the piece data path (internal/piecewire), by how they were written: sendfile (from the cache file on a plaintext connection) or copy (TLS, or read from storage)."}, []string{"method"}),
		pieceConns: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "piece_data_path_connections",
			Help: "Open connections of the piece data path."}),
	}
	if reg != nil {
		reg.MustRegister(m.egressBytes, m.servedBytes, m.piecesServed, m.piecesAgain, m.grantsFreed, m.rejects, m.metainfoComputed, m.metainfoRequests,
			m.metainfoProxied, m.cacheHits, m.cacheMisses, m.cacheEvictions, m.cacheBytes, m.storageReadBytes, m.streams, m.handshaking,
			m.refused, m.uploads, m.announces, m.announcedBlobsNow, m.capabilityDenied, m.pieceBytes, m.pieceConns)
	}
	return m
}
