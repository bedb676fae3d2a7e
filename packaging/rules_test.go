package packaging

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// The shipped alert rules are valid, fire when their unit tests say
// (promtool test rules), and name only series a real tokend exports.
func TestAlertRules(t *testing.T) {
	promtool := os.Getenv("TOKEND_PROMTOOL")
	if promtool == "" {
		if p, err := exec.LookPath("promtool"); err == nil {
			promtool = p
		} else {
			daemontest.Need(t, "promtool", "apt-get install prometheus (for its promtool), or set TOKEND_PROMTOOL")
		}
	}
	for _, args := range [][]string{{"check", "rules", "tokend.rules.yml"}, {"test", "rules", "tokend.rules.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}

	rules, err := os.ReadFile("prometheus/tokend.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	d := daemontest.StartTokend(t, daemontest.StandInConfig(t, ep))
	d.Token()
	text, err := proto.Client{Path: d.Sock, Timeout: 10 * time.Second}.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	exported := daemontest.ParseMetrics(t, string(text))
	names := regexp.MustCompile(`\btokend_[a-z_]+`).FindAllString(string(rules), -1)
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		if exported[name] == nil {
			t.Errorf("the rules use %s, which tokend does not export", name)
		}
	}
}
