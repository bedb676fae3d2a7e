package config

// Access is a token's allow lists, resolved to ids. All empty means anyone
// who can open the socket; uid 0 is always allowed.
type Access struct {
	UIDs []uint32 // allow_uids plus allow_users
	GIDs []uint32 // allow_gids plus allow_groups
}
