package swarm

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/pkg/peer/piecestore"
)

type metrics struct {
	downloaded       *prometheus.CounterVec
	uploaded         prometheus.Counter
	uploadedStream   prometheus.Counter
	uploadsRefused   prometheus.Counter
	duplicate        prometheus.Counter
	discarded        *prometheus.CounterVec
	piecesVerified   *prometheus.CounterVec
	piecesRejected   *prometheus.CounterVec
	blacklisted      *prometheus.CounterVec
	connections      *prometheus.GaugeVec
	dials            *prometheus.CounterVec
	announces        *prometheus.CounterVec
	announceDuration *prometheus.HistogramVec
	downloads        *prometheus.CounterVec
	downloadsActive  prometheus.Gauge
	cacheHits        prometheus.Counter
	cacheMisses      prometheus.Counter
	capabilityDenied *prometheus.CounterVec
	metainfoRejected prometheus.Counter
	digestMismatches prometheus.Counter
	blobHashed       prometheus.Counter
	pieceDials       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, store *piecestore.Store) *metrics {
	m := &metrics{
		downloaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_downloaded_bytes_total",
			Help: "Verified piece bytes received, by source: peer (other agents) or origin (origin seeders).",
		}, []string{"source"}),
		uploaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_uploaded_bytes_total",
			Help: "Piece bytes sent to other agents.",
		}),
		uploadedStream: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_stream_uploaded_bytes_total",
			Help: "Piece bytes sent to other agents on Exchange streams rather than the piece data path: to a peer with swarm.pieceListen off, or whose piece port could not be dialed. 0 when every agent serves the piece data path.",
		}),
		uploadsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_uploads_refused_total",
			Help: "Piece requests from other agents answered BUSY: the stream's queue was full, or this host's uplink would not send the piece within half the piece timeout.",
		}),
		duplicate: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_duplicate_bytes_total",
			Help: "Verified piece bytes received for pieces already held (endgame duplicates).",
		}),
		discarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_discarded_bytes_total",
			Help: "Chunk bytes received for pieces not (or no longer) requested, discarded unread, by source.",
		}, []string{"source"}),
		piecesVerified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_pieces_verified_total",
			Help: "Pieces received that verified against their SHA-256, by source.",
		}, []string{"source"}),
		piecesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_pieces_rejected_total",
			Help: "Pieces received that failed verification (the sender is blacklisted), by source.",
		}, []string{"source"}),
		blacklisted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_peers_blacklisted_total",
			Help: "Peers dropped from a download, by reason: corrupt or unresponsive.",
		}, []string{"reason"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_agent_connections",
			Help: "Open Exchange streams, by direction (outgoing: dialed by this agent).",
		}, []string{"direction"}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_dials_total",
			Help: "Exchange streams opened to peers and seeders, by result (ok, failed: refused, timed out or no handshake).",
		}, []string{"result"}),
		announces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_announces_total",
			Help: "Announces to the tracker, by event (started, completed, stopped, none) and result (ok, failed).",
		}, []string{"event", "result"}),
		announceDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_agent_announce_duration_seconds",
			Help:    "Announce latency, failover across trackers included, by result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"result"}),
		downloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_downloads_total",
			Help: "Blob downloads ended, by result (completed, failed).",
		}, []string{"result"}),
		downloadsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_agent_downloads_active",
			Help: "Blob downloads running.",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_cache_hits_total",
			Help: "Blob opens served from a complete blob in the cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_cache_misses_total",
			Help: "Blob opens that started or joined a download.",
		}),
		capabilityDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_capability_denied_total",
			Help: "GetMetainfo calls and Exchange streams from peers refused with PERMISSION_DENIED for want of a valid capability for the blob, by rpc (get_metainfo, exchange).",
		}, []string{"rpc"}),
		metainfoRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_metainfo_rejected_total",
			Help: "Metainfo answers from seeders refused because the origin's signature did not verify (a forged or misconfigured seeder).",
		}),
		pieceDials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_agent_piecewire_dials_total",
			Help: "Piece data path connections opened to agents that offered one (swarm.pieceListen), by result (ok, failed: the pieces then stay on the Exchange stream).",
		}, []string{"result"}),
		digestMismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_blob_digest_mismatches_total",
			Help: "Downloads whose assembled blob, every piece verified, did not hash to its digest: the clients' responses were cut before their last byte and the blob dropped.",
		}),
		blobHashed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_agent_blob_hashed_bytes_total",
			Help: "Bytes of downloaded blobs hashed again as a whole against their digest (swarm.verifyBlobDigest), for per-piece metainfo only: chained metainfo's pieces, each verified as it arrives, are the check.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.downloaded, m.uploaded, m.uploadedStream, m.uploadsRefused, m.duplicate, m.discarded, m.piecesVerified, m.piecesRejected,
			m.blacklisted, m.connections, m.dials, m.announces, m.announceDuration, m.downloads, m.downloadsActive,
			m.cacheHits, m.cacheMisses, m.capabilityDenied, m.metainfoRejected, m.digestMismatches, m.blobHashed, m.pieceDials,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "shoal_agent_cache_used_bytes",
				Help: "Bytes the blobs in the piece store occupy (reserved), complete or not.",
			}, func() float64 { return float64(store.Used()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "shoal_agent_cache_blobs",
				Help: "Blobs in the piece store, complete or not.",
			}, func() float64 { return float64(len(store.List())) }),
		)
	}
	return m
}
