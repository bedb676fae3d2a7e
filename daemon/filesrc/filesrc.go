// Package filesrc reads an OAuth2 client's credentials from files: the
// way a host without Vault keeps them, typically as systemd credentials
// (LoadCredentialEncrypted= puts them, decrypted, in a directory only
// the service can read). The files are read at every token request, so a
// rotated file is used from the next request on.
package filesrc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tokend/tokend/vaultsrc"
)

// Files names where one client's credentials are: the client id given
// as is (it is not a secret) or in a file, and the file of each secret
// the client authentication uses. Keys are the config keys, for errors.
// Comparable with ==, so that a reload that leaves it alone keeps the
// token.
type Files struct {
	ID             string // client_id
	IDFile         string // client_id_file
	SecretFile     string // client_secret_file (basic+body, basic, body)
	PrivateKeyFile string // private_key_file (private_key_jwt)
	CertFile       string // tls_cert_file (tls_client_auth)
	KeyFile        string // tls_key_file (tls_client_auth)
	KeyID          string // the assertion's kid (assertion_kid), private_key_jwt
}

// Set reports whether the credentials come from files at all.
func (f Files) Set() bool { return f != Files{} }

// maxSize bounds each file: a secret, a key or a certificate chain.
const maxSize = 64 << 10

// Read reads the credentials. prefix ("token.vibes") makes the config
// key each error names.
func (f Files) Read(prefix string) (vaultsrc.Credentials, error) {
	var c vaultsrc.Credentials
	var err error
	read := func(key, path string) string {
		if path == "" || err != nil {
			return ""
		}
		var s string
		s, err = readFile(prefix+"."+key, path)
		return s
	}
	c.ID = f.ID
	if f.IDFile != "" {
		c.ID = read("client_id_file", f.IDFile)
	}
	c.Secret = read("client_secret_file", f.SecretFile)
	if f.PrivateKeyFile != "" {
		c.Secret, c.KeyID = read("private_key_file", f.PrivateKeyFile), f.KeyID
	}
	if f.CertFile != "" {
		c.Cert, c.Secret = read("tls_cert_file", f.CertFile), read("tls_key_file", f.KeyFile)
	}
	if err != nil {
		return vaultsrc.Credentials{}, err
	}
	return c, nil
}

// readFile reads one credential file, without its trailing line break
// (`echo secret > file` and systemd-creds keep one). The error names the
// key and the path, never the content.
func readFile(key, path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", fmt.Errorf("%s %q: %w", key, path, err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxSize+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("%s %q: %w", key, path, err)
	case len(b) > maxSize:
		return "", fmt.Errorf("%s %q is over %d KiB: not a credential file", key, path, maxSize>>10)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s %q is empty", key, path)
	}
	return s, nil
}
