package filesrc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokend/tokend/vaultsrc"
)

// Each client_auth's files read into the credentials it uses, without
// the trailing line break; a rotated file is read at the next Read.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	id, secret := file("id", "cid\n"), file("secret", "s3cret+/= \r\n")
	for _, tc := range []struct {
		f    Files
		want vaultsrc.Credentials
	}{
		{Files{ID: "lit", SecretFile: secret}, vaultsrc.Credentials{ID: "lit", Secret: "s3cret+/= "}},
		{Files{IDFile: id, SecretFile: secret}, vaultsrc.Credentials{ID: "cid", Secret: "s3cret+/= "}},
		{Files{ID: "lit", PrivateKeyFile: file("key", "-----BEGIN KEY-----\n"), KeyID: "k1"}, vaultsrc.Credentials{ID: "lit", Secret: "-----BEGIN KEY-----", KeyID: "k1"}},
		{Files{ID: "lit", CertFile: file("cert", "CERT\n"), KeyFile: file("tlskey", "KEY\n")}, vaultsrc.Credentials{ID: "lit", Cert: "CERT", Secret: "KEY"}},
	} {
		got, err := tc.f.Read("token.a")
		if err != nil || got != tc.want {
			t.Errorf("%+v: %+v, %v; want %+v", tc.f, got, err, tc.want)
		}
	}
	file("secret", "rotated")
	if got, _ := (Files{ID: "lit", SecretFile: secret}).Read("token.a"); got.Secret != "rotated" {
		t.Errorf("after rotation: %q", got.Secret)
	}
}

// A missing, unreadable, empty or oversized file is an error naming the
// key and path, never the content.
func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, []byte(strings.Repeat("SECRETCONTENT", 10000)), 0o600)
	for f, want := range map[Files]string{
		{ID: "c", SecretFile: filepath.Join(dir, "none")}: `token.a.client_secret_file "` + dir + `/none": no such file or directory`,
		{ID: "c", SecretFile: empty}:                      `token.a.client_secret_file "` + empty + `" is empty`,
		{ID: "c", SecretFile: big}:                        `token.a.client_secret_file "` + big + `" is over 64 KiB`,
		{IDFile: empty, SecretFile: big}:                  `token.a.client_id_file "` + empty + `" is empty`,
		{ID: "c", CertFile: empty, KeyFile: big}:          `token.a.tls_cert_file "` + empty + `" is empty`,
	} {
		_, err := f.Read("token.a")
		if err == nil || err.Error() != want && !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%+v: %v, want %s", f, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "SECRETCONTENT") {
			t.Errorf("the error shows the content: %v", err)
		}
	}
	if (Files{}).Set() || !(Files{ID: "x"}).Set() {
		t.Error("Set is wrong")
	}
}
