package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// usersFile is the --users file: who may connect to the embedded server.
//
//	{"users": [
//	  {"name": "admin", "password": "…"},
//	  {"name": "scale", "password": "…", "plugin": {"mode": "mutator", "triggers": ["task_executor_run_task"]}}
//	]}
//
// A user without "plugin" has every right (qtasksd itself, clients,
// operators). A user with "plugin" is that plugin's, named as it is, with
// the least rights it needs (bus.PluginPermissions). A password may be a
// bcrypt hash ("$2a$…"), which the server checks as such.
type usersFile struct {
	Users []userEntry `json:"users"`
}

type userEntry struct {
	Name     string      `json:"name"`
	Password string      `json:"password"`
	Plugin   *pluginUser `json:"plugin,omitempty"`
}

type pluginUser struct {
	Mode     string   `json:"mode"`
	Triggers []string `json:"triggers"`
}

// loadUsers reads and checks a users file.
func loadUsers(path string) ([]bus.User, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	us, err := parseUsers(data)
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return us, nil
}

func parseUsers(data []byte) ([]bus.User, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f usersFile
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one JSON value")
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
		if strings.TrimSpace(u.Password) == "" {
			return nil, fmt.Errorf("user %q has no password", u.Name)
		}
		bu := bus.User{Name: u.Name, Password: u.Password}
		if p := u.Plugin; p != nil {
			switch p.Mode {
			case "":
				p.Mode = events.ModeMutator
			case events.ModeMutator, events.ModeObserver, events.ModeShadow:
			default:
				return nil, fmt.Errorf("user %q: plugin mode %q: want mutator, observer or shadow", u.Name, p.Mode)
			}
			for _, t := range p.Triggers {
				if _, ok := events.Lookup(t); !ok {
					return nil, fmt.Errorf("user %q: unknown trigger %q", u.Name, t)
				}
			}
			perms := bus.PluginPermissions(events.PluginInfo{Name: u.Name, Mode: p.Mode, Triggers: p.Triggers})
			bu.Permissions = &perms
		} else {
			full = true
		}
		out = append(out, bu)
	}
	if !full {
		return nil, errors.New(`no user without "plugin": qtasksd itself needs one with every right`)
	}
	return out, nil
}

// ownUser picks the user qtasksd connects to its embedded server as: the
// one --user names, else the first with every right. A bcrypt hash in the
// file cannot be sent back to the server: --password gives the password.
func ownUser(users []bus.User, name, password string) (string, string, error) {
	for _, u := range users {
		if (name == "" && u.Permissions == nil) || (name != "" && u.Name == name) {
			if u.Permissions != nil {
				return "", "", fmt.Errorf("--user %s is a plugin's user; qtasksd needs one with every right", name)
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
	return "", "", fmt.Errorf("--user %s is not in the users file", name)
}
