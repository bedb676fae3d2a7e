package config

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
)

// host is what parsing a configuration asks of the machine: environment
// variables (VAULT_ADDR, VAULT_TOKEN, CREDENTIALS_DIRECTORY) and users and
// groups by name, and the mode of a file sink's directory.
type host struct {
	getenv func(string) string
	user   func(name string) (uint32, error)
	group  func(name string) (int, error) // a number is taken as a gid
	stat   func(path string) (os.FileInfo, error)
}

func thisHost() host {
	return host{getenv: os.Getenv, user: lookupUser, group: lookupGroup, stat: os.Stat}
}

func lookupUser(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, fmt.Errorf("unknown user %q", name)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(uid), err
}

func lookupGroup(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("unknown group %q", name)
	}
	return strconv.Atoi(g.Gid)
}
