package config

import (
	"crypto/x509"
	"fmt"
	"os"
)

// CAPool is the roots for a token's ca_file: the system's plus the file's,
// or the file's alone with ca_only.
func CAPool(file string, only bool) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !only {
		if sys, err := x509.SystemCertPool(); err == nil {
			pool = sys
		}
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%q holds no PEM certificate", file)
	}
	return pool, nil
}
