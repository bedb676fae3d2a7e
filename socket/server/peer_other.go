//go:build !linux

package server

import (
	"errors"
	"net"
)

// peerOf fails closed where tokend cannot read peer credentials: the
// server runs on Linux only. The rest of the package (the client) builds
// everywhere.
func peerOf(*net.UnixConn) (Peer, error) {
	return Peer{}, errors.New("reading peer credentials: supported on Linux only")
}
