package config

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/tokend/tokend/daemon/daemontest"
)

// tokend.toml(5) is the reference of every key: each key the schema
// knows has its own entry (".B key") under its table's section, and the
// page names no key the schema does not know.
func TestManPageKeys(t *testing.T) {
	page, err := os.ReadFile(daemontest.Root("packaging/man/tokend.toml.5"))
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string][]string{"TOP-LEVEL KEYS": topLevelKeys, "[vault]": vaultKeys, "[token.NAME]": tokenKeys, "[proxy.NAME]": proxyKeys}
	parts := regexp.MustCompile(`(?m)^\.SH `).Split(string(page), -1)
	seen := map[string]bool{}
	for _, part := range parts {
		title, body, _ := strings.Cut(part, "\n")
		keys, ok := sections[title]
		if !ok {
			continue
		}
		seen[title] = true
		documented := map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^\.B ([a-z_]+)$`).FindAllStringSubmatch(body, -1) {
			documented[m[1]] = true
		}
		for _, k := range keys {
			if !documented[k] {
				t.Errorf("tokend.toml(5) section %s lacks key %s", title, k)
			}
			delete(documented, k)
		}
		for k := range documented {
			t.Errorf("tokend.toml(5) section %s documents %s, which the schema does not know", title, k)
		}
	}
	for title := range sections {
		if !seen[title] {
			t.Errorf("tokend.toml(5) has no section %s", title)
		}
	}
}
