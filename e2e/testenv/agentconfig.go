package testenv

// FaultAgentConfig is a peer-agent config file (YAML) for tests that break
// things on purpose: it shortens the agents' timeouts so that a dead or
// silent peer or a stopped tracker costs seconds, not the production
// defaults' minutes, and makes downloads re-announce often so that peers
// find each other again quickly. Tests without faults run the defaults:
// short piece timeouts on a loaded machine send requests to the origin
// that the swarm would have served.
const FaultAgentConfig = `swarm:
  dialTimeout: 2s
  pieceTimeout: 5s
  downloadAnnounceInterval: 1s
tracker:
  cooldown: 5s
shutdownGrace: 5s
`
