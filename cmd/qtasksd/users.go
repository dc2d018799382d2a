package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// usersFile is the --users file: who may connect to the embedded server.
//
//	{"users": [
//	  {"name": "admin", "password": "…"},
//	  {"name": "scale", "password": "…", "plugin": {"mode": "mutator", "triggers": ["task_executor_run_task"], "max_timeout_ms": 10000}}
//	]}
//
// A user without "plugin" is a person or a program using qtasks; its
// "roles" (read, submit, operate, admin: each includes the ones before it;
// default admin) say what it may do over HTTP (httpauth.go), and only an
// admin may use NATS, with every right (qtasksd itself, clients, operators).
// A user with "plugin" is that plugin's, named as it is, with the least
// rights it needs (bus.PluginPermissions) and no HTTP rights; "plugin" is
// its grant (events.PluginGrant): the registrar refuses a registration with
// another mode, triggers outside "triggers" (none: any), another
// "shadow_of", or a timeout above "max_timeout_ms" (0: --max-plugin-timeout). A password
// may be a bcrypt hash ("$2a$…"), which the server checks as such; instead
// of a password, "nkey" may give the public key ("U…") of an NKey whose
// seed the user signs with.
type usersFile struct {
	Users []userEntry `json:"users"`
}

type userEntry struct {
	Name     string      `json:"name"`
	Password string      `json:"password"`
	NKey     string      `json:"nkey,omitempty"`
	Roles    []string    `json:"roles,omitempty"`
	Plugin   *pluginUser `json:"plugin,omitempty"`
}

type pluginUser struct {
	Mode         string   `json:"mode"`
	Triggers     []string `json:"triggers"`
	ShadowOf     string   `json:"shadow_of"`
	MaxTimeoutMS int64    `json:"max_timeout_ms"`
}

// loadUsers reads and checks a users file: its users for the embedded
// server, and who may use the HTTP API.
func loadUsers(path string) ([]bus.User, *httpAuth, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("users file: %w", err)
	}
	us, err := parseUsers(data)
	if err == nil {
		var auth *httpAuth
		if auth, err = parseHTTPUsers(data); err == nil {
			return us, auth, nil
		}
	}
	return nil, nil, fmt.Errorf("users file %s: %w", path, err)
}

func parseUsers(data []byte) ([]bus.User, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f usersFile
	if err := dec.Decode(&f); err != nil {
		return nil, describeJSON(data, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		line, col := position(data, dec.InputOffset())
		return nil, fmt.Errorf("line %d, column %d: more than one JSON value", line, col)
	}
	if len(f.Users) == 0 {
		return nil, errors.New(`no users: want {"users": [{"name": …, "password": …}, …]}`)
	}
	seen := map[string]bool{}
	full := false
	out := make([]bus.User, 0, len(f.Users))
	for i, u := range f.Users {
		if !events.ValidName(u.Name) {
			return nil, fmt.Errorf("user %d: name %q: want letters, digits, '-' and '_'", i+1, u.Name)
		}
		if seen[u.Name] {
			return nil, fmt.Errorf("user %q is listed twice", u.Name)
		}
		seen[u.Name] = true
		if err := checkSecret(u); err != nil {
			return nil, err
		}
		if err := checkRoles(u); err != nil {
			return nil, err
		}
		bu := bus.User{Name: u.Name, Password: u.Password, NKey: u.NKey}
		if p := u.Plugin; p != nil {
			if p.Mode == "" {
				p.Mode = events.ModeMutator
			}
			if p.MaxTimeoutMS < 0 {
				return nil, fmt.Errorf("user %q: plugin max_timeout_ms %d: want 0 (--max-plugin-timeout) or more", u.Name, p.MaxTimeoutMS)
			}
			if p.ShadowOf != "" && p.Mode != events.ModeShadow {
				return nil, fmt.Errorf("user %q: plugin shadow_of is for mode shadow, not %s", u.Name, p.Mode)
			}
			// A grant that no registration could satisfy is a mistake:
			// the rule registrations are held to says why.
			info := events.PluginInfo{Name: u.Name, Mode: p.Mode, Triggers: p.Triggers, ShadowOf: p.ShadowOf, TimeoutMS: 1}
			if err := events.CheckPlugin(u.Name, info, 0); err != nil {
				return nil, fmt.Errorf("user %q: plugin grant: %w", u.Name, err)
			}
			perms := bus.PluginPermissions(info)
			bu.Permissions = &perms
			bu.Grant = &events.PluginGrant{Mode: p.Mode, Triggers: p.Triggers, ShadowOf: p.ShadowOf, MaxTimeoutMS: p.MaxTimeoutMS}
		} else if natsRights(u) {
			full = true
		} else {
			bu.Permissions = &bus.Permissions{Publish: []string{}, Subscribe: []string{}} // HTTP only: nothing on NATS
		}
		out = append(out, bu)
	}
	if !full {
		return nil, errors.New(`no admin user (one without "plugin", with role admin or no roles): qtasksd itself needs one with every right`)
	}
	return out, nil
}

// ownUser picks the user qtasksd connects to its embedded server as: the
// one --user names, else the first admin with a password (with --nkey,
// qtasksd signs with the seed instead and ownUser is not asked). A bcrypt hash in the
// file cannot be sent back to the server: --password gives the password.
func ownUser(users []bus.User, name, password string) (string, string, error) {
	nkeyOnly := false
	for _, u := range users {
		if name == "" && u.Permissions == nil && u.NKey != "" {
			nkeyOnly = true // a password user may come later
			continue
		}
		if (name == "" && u.Permissions == nil) || (name != "" && u.Name == name) {
			if u.Permissions != nil {
				return "", "", fmt.Errorf("--user %s is not an admin (a plugin's user, or one with lesser roles); qtasksd needs one with every right", name)
			}
			if u.NKey != "" {
				return "", "", fmt.Errorf("user %s authenticates with an NKey: give its seed with --nkey", u.Name)
			}
			if password == "" {
				if strings.HasPrefix(u.Password, "$2") {
					return "", "", fmt.Errorf("user %s's password in the users file is a bcrypt hash: give it with --password", u.Name)
				}
				password = u.Password
			}
			return u.Name, password, nil
		}
	}
	if nkeyOnly {
		return "", "", errors.New("every admin user in the users file authenticates with an NKey: give qtasksd's seed with --nkey")
	}
	return "", "", fmt.Errorf("--user %s is not in the users file", name)
}

// describeJSON says what is wrong with the users file in its own terms:
// encoding/json gives byte offsets and names Go types ("cannot unmarshal
// object into Go struct field usersFile.users of type []main.userEntry").
func describeJSON(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return errors.New(`the file is empty: want {"users": [{"name": …, "password": …}, …]}`)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("the file ends in the middle of its JSON")
	case errors.As(err, &se):
		line, col := position(data, se.Offset-1) // Offset is just past the bad byte
		return fmt.Errorf("line %d, column %d: %w", line, col, se)
	case errors.As(err, &te):
		// Offset is somewhere in or just past the value: the line will do.
		line, _ := position(data, te.Offset)
		what := "the file"
		if te.Field != "" {
			what = fmt.Sprintf("%q", te.Field)
		}
		return fmt.Errorf("line %d: %s must be %s, not %s %s", line, what, jsonKind(te.Type), article(te.Value), te.Value)
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// position is the line and column of byte offset off in data, from 1.
func position(data []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	return line, int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
}

// jsonKind names what JSON value decodes into t.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Struct, reflect.Map, reflect.Pointer:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	default:
		return "a number"
	}
}

func article(jsonType string) string {
	if strings.IndexByte("aeiou", jsonType[0]) >= 0 {
		return "an"
	}
	return "a"
}
