package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/tokend/tokend/socket/proto"
)

func TestParse(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "TOKEND_SOCKET" {
				return v
			}
			return ""
		}
	}
	for _, c := range []struct {
		name   string
		args   []string
		env    string
		socket string
		req    proto.Request
		exec   string
	}{
		{"default socket", []string{"get"}, "", proto.DefaultPath, proto.Request{Verb: proto.VerbToken}, ""},
		{"env socket", []string{"get"}, "/e.sock", "/e.sock", proto.Request{Verb: proto.VerbToken}, ""},
		{"flag beats env", []string{"--socket", "/f.sock", "get"}, "/e.sock", "/f.sock", proto.Request{Verb: proto.VerbToken}, ""},
		{"socket after the command", []string{"header", "vibes", "--socket=/a.sock"}, "", "/a.sock", proto.Request{Verb: proto.VerbHeader, Name: "vibes"}, ""},
		{"min before and after NAME", []string{"json", "--min", "60", "vibes"}, "", proto.DefaultPath, proto.Request{Verb: proto.VerbJSON, Name: "vibes", Min: 60}, ""},
		{"min after NAME", []string{"get", "vibes", "--min", "60"}, "", proto.DefaultPath, proto.Request{Verb: proto.VerbToken, Name: "vibes", Min: 60}, ""},
		{"watch exec", []string{"watch", "--exec", "echo hi", "vibes"}, "", proto.DefaultPath, proto.Request{Verb: proto.VerbWatch, Name: "vibes"}, "echo hi"},
		{"list", []string{"list"}, "", proto.DefaultPath, proto.Request{Verb: proto.VerbList}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			inv, err := parse(c.args, env(c.env))
			if err != nil || inv.print != "" || inv.socket != c.socket || inv.req != c.req || inv.exec != c.exec {
				t.Errorf("parse(%q) = %+v, %v", c.args, inv, err)
			}
		})
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{nil, "no command given"},
		{[]string{"fetch"}, `unknown command "fetch"`},
		{[]string{"list", "vibes"}, "too many arguments for list"},
		{[]string{"get", "a", "b"}, "too many arguments for get"},
		{[]string{"get", "a b"}, `malformed token name "a b"`},
		{[]string{"get", "--min", "-1"}, "--min -1: want 0 to"},
		{[]string{"info", "--min", "5"}, "flag provided but not defined: -min"},
		{[]string{"get", "--exec", "x"}, "flag provided but not defined: -exec"},
		{[]string{"--nope", "get"}, "flag provided but not defined: -nope"},
		{[]string{"help", "fetch"}, `unknown command "fetch"`},
		{[]string{"header", "--method", "GET"}, "--method and --url go together"},
		{[]string{"get", "--url", "https://a/"}, "flag provided but not defined: -url"},
	} {
		_, err := parse(c.args, env(""))
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(ue.msg, c.msg) || ue.usage == "" {
			t.Errorf("parse(%q): %v, want a usage error with %q", c.args, err, c.msg)
		}
	}
	if inv, err := parse([]string{"header", "vibes", "--method", "POST", "--url", "https://api.example.com/v1?x=1"}, env("")); err != nil ||
		inv.method != "POST" || inv.url != "https://api.example.com/v1?x=1" || inv.req.Name != "vibes" {
		t.Errorf("header --method --url: %+v, %v", inv, err)
	}
	for _, args := range [][]string{{"-h"}, {"help"}, {"help", "get"}, {"get", "-h"}, {"--version"}, {"version"}} {
		if inv, err := parse(args, env("")); err != nil || inv.print == "" {
			t.Errorf("parse(%q) = %+v, %v: want text to print", args, inv, err)
		}
	}
}
