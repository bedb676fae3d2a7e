// Package server serves tokens to local processes over a Unix socket: the
// listener (its own socket, or the one systemd passes), the peers' kernel
// verified credentials (SO_PEERCRED, SO_PEERGROUPS), and a Server that
// answers the protocol of package proto with them. The Tokens
// implementation decides who may read what; the package knows nothing of
// Vault or OAuth2.
package server
