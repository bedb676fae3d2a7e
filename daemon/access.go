package daemon

import (
	"slices"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/socket/server"
)

// allows reports whether peer p may read a token whose allow lists are a.
// All empty means anyone who can open the socket; uid 0 always may.
func allows(a config.Access, p server.Peer) bool {
	if p.UID == 0 || len(a.UIDs) == 0 && len(a.GIDs) == 0 || slices.Contains(a.UIDs, p.UID) {
		return true
	}
	return slices.ContainsFunc(a.GIDs, p.InGroup)
}
