package daemon

import (
	"slices"

	"github.com/tokend/tokend/socket/server"
)

// Access is a token's allow lists, resolved to ids. All empty means anyone
// who can open the socket; uid 0 is always allowed.
type Access struct {
	UIDs []uint32 // allow_uids plus allow_users
	GIDs []uint32 // allow_gids plus allow_groups
}

func (a Access) allows(p server.Peer) bool {
	if p.UID == 0 || len(a.UIDs) == 0 && len(a.GIDs) == 0 || slices.Contains(a.UIDs, p.UID) {
		return true
	}
	return slices.ContainsFunc(a.GIDs, p.InGroup)
}
