package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

func TestParseUsers(t *testing.T) {
	t.Parallel()
	us, err := parseUsers([]byte(`{"users":[
		{"name":"admin","password":"a-secret"},
		{"name":"scale","password":"s-secret","plugin":{"triggers":["task_executor_run_task"]}},
		{"name":"audit","password":"$2a$11$abc","plugin":{"mode":"observer"}}]}`))
	require.NoError(t, err)
	require.Len(t, us, 3)
	require.Nil(t, us[0].Permissions, "no plugin: every right")
	want := bus.PluginPermissions(events.PluginInfo{Name: "scale", Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorRunTask}})
	require.Equal(t, &want, us[1].Permissions, "a plugin's user: the least rights, mutator by default")
	require.Equal(t, &events.PluginGrant{Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorRunTask}}, us[1].Grant)
	require.Equal(t, &events.PluginGrant{Mode: events.ModeObserver}, us[2].Grant)
	for _, s := range us[2].Permissions.Publish {
		require.NotContains(t, s, "CONSUMER.CREATE", "the registrar creates plugins' consumers")
	}

	name, pw, err := ownUser(us, "", "")
	require.NoError(t, err)
	require.Equal(t, "admin", name)
	require.Equal(t, "a-secret", pw)
	_, _, err = ownUser(us, "scale", "")
	require.ErrorContains(t, err, "plugin's user")
	_, _, err = ownUser(us, "nobody", "")
	require.ErrorContains(t, err, "not in the users file")
	hashed, err := parseUsers([]byte(`{"users":[{"name":"admin","password":"$2a$11$abc"}]}`))
	require.NoError(t, err)
	_, _, err = ownUser(hashed, "", "")
	require.ErrorContains(t, err, "bcrypt")
	_, pw, err = ownUser(hashed, "admin", "plain")
	require.NoError(t, err)
	require.Equal(t, "plain", pw)

	for _, tc := range []struct{ in, msg string }{
		{``, "the file is empty"},
		{`{"users":[{"name":"a",`, "ends in the middle"},
		{"{\"users\": [\n  {\"name\": \"a\", \"password\": \"x\"},\n]}", "line 3, column 1: invalid character ']'"},
		{`{"users": {"name": "a"}}`, `"users" must be a list, not an object`},
		{"{\"users\": [\n {\"name\": \"a\", \"password\": 123}]}", `line 2: "users.password" must be a string, not a number`},
		{`{"users":[{"name":"a","password":"x","plugin":{"triggers":"storage_add"}}]}`, `"users.plugin.triggers" must be a list, not a string`},
		{`[]`, "the file must be an object, not an array"},
		{`{"users":[]}`, "no users"},
		{`{"users":[{"name":"a","password":"x"}]} {}`, "more than one"},
		{`{"users":[{"name":"a","password":"x","role":"root"}]}`, "unknown field"},
		{`{"users":[{"name":"a b","password":"x"}]}`, "name"},
		{`{"users":[{"name":"a","password":""}]}`, "no password"},
		{`{"users":[{"name":"a","password":"x"},{"name":"a","password":"y"}]}`, "twice"},
		{`{"users":[{"name":"a","password":"x"},{"name":"p","password":"y","plugin":{"mode":"boss"}}]}`, `plugin grant: plugin p: mode "boss"`},
		{`{"users":[{"name":"a","password":"x"},{"name":"p","password":"y","plugin":{"triggers":["nope"]}}]}`, "unknown trigger"},
		{`{"users":[{"name":"a","password":"x"},{"name":"p","password":"y","plugin":{"triggers":["worker_start"]}}]}`, "one-way"},
		{`{"users":[{"name":"a","password":"x"},{"name":"p","password":"y","plugin":{"mode":"shadow"}}]}`, "shadow_of"},
		{`{"users":[{"name":"a","password":"x"},{"name":"p","password":"y","plugin":{"shadow_of":"q"}}]}`, "shadow_of is for mode shadow"},
		{`{"users":[{"name":"a","password":"x"},{"name":"p","password":"y","plugin":{"max_timeout_ms":-1}}]}`, "max_timeout_ms"},
		{`{"users":[{"name":"p","password":"y","plugin":{}}]}`, "every right"},
		{`{"users":[{"name":"a","password":"x","roles":["submit"]}]}`, "no admin user"},
		{`{"users":[{"name":"a","password":"x","roles":["root"]}]}`, `role "root"`},
		{`{"users":[{"name":"a","password":"x"},{"name":"p","password":"y","roles":["read"],"plugin":{}}]}`, "no HTTP roles"},
		{`{"users":[{"name":"a","password":"x","nkey":"UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"}]}`, "both a password and an nkey"},
		{`{"users":[{"name":"a","nkey":"SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"}]}`, "not a user's public NKey"},
	} {
		_, err := parseUsers([]byte(tc.in))
		require.ErrorContains(t, err, tc.msg, tc.in)
		require.NotContains(t, err.Error(), "Go ", "no Go type names: %s", tc.in)
	}
}

// Whatever an operator writes, parseUsers returns an error or users the
// server can take: valid names, passwords, a full-rights user, and plugin
// users with permissions.
func FuzzParseUsers(f *testing.F) {
	f.Add([]byte(`{"users":[{"name":"admin","password":"x"},{"name":"p","password":"y","plugin":{"mode":"observer","triggers":["storage_add"]}}]}`))
	f.Add([]byte(`{"users":[{"name":"a","password":" "}]}`))
	f.Add([]byte(`{"users":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		us, err := parseUsers(data)
		if err != nil {
			return
		}
		full := false
		names := map[string]bool{}
		for _, u := range us {
			if !events.ValidName(u.Name) || (u.Password == "") == (u.NKey == "") || names[u.Name] {
				t.Fatalf("accepted a bad user %+v", u)
			}
			names[u.Name] = true
			full = full || u.Permissions == nil
		}
		if !full {
			t.Fatal("accepted users without a full-rights one")
		}
		if _, _, err := ownUser(us, "", ""); err != nil && !strings.Contains(err.Error(), "bcrypt") && !strings.Contains(err.Error(), "--nkey") {
			t.Fatalf("no user for qtasksd itself: %v", err)
		}
	})
}

// Roles: a user without "plugin" and without roles is an admin, with every
// NATS right; one with lesser roles is for HTTP only and may do nothing on
// NATS; a plugin's user has no HTTP rights; an NKey user has no password.
func TestParseUsersRoles(t *testing.T) {
	t.Parallel()
	const pub = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
	data := []byte(`{"users":[
		{"name":"root","password":"r"},
		{"name":"ops","password":"o","roles":["read","operate"]},
		{"name":"robot","nkey":"` + pub + `","roles":["admin"]},
		{"name":"scale","password":"s","plugin":{}}]}`)
	us, err := parseUsers(data)
	require.NoError(t, err)
	require.Nil(t, us[0].Permissions)
	require.Equal(t, &bus.Permissions{Publish: []string{}, Subscribe: []string{}}, us[1].Permissions, "HTTP only: nothing on NATS")
	require.Nil(t, us[2].Permissions)
	require.Equal(t, pub, us[2].NKey)
	require.Empty(t, us[2].Password)
	auth, err := parseHTTPUsers(data)
	require.NoError(t, err)
	require.Equal(t, map[string]httpUser{"root": {"r", roleAdmin}, "ops": {"o", roleOperate}}, auth.users, "no plugin, no password-less user")
}
