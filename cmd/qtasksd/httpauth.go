package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// role is what a users-file user may do over HTTP. Each role includes the
// ones before it.
type role int

const (
	roleNone    role = iota // a plugin's user: no HTTP rights
	roleRead                // GET /tasks/{id}
	roleSubmit              // POST /tasks/{name}
	roleOperate             // GET /metrics
	roleAdmin               // /debug/pprof/ (with --pprof); every NATS right
)

var roleNames = map[string]role{"read": roleRead, "submit": roleSubmit, "operate": roleOperate, "admin": roleAdmin}

func (r role) String() string {
	for n, v := range roleNames {
		if v == r {
			return n
		}
	}
	return "none"
}

// checkSecret wants exactly one of a password and an NKey public key.
func checkSecret(u userEntry) error {
	switch hasPw := strings.TrimSpace(u.Password) != ""; {
	case hasPw && u.NKey != "":
		return fmt.Errorf("user %q has both a password and an nkey: give one", u.Name)
	case u.NKey != "":
		if !nkeys.IsValidPublicUserKey(u.NKey) {
			return fmt.Errorf("user %q: nkey %q is not a user's public NKey (it starts with U; nk -gen user -pubout makes one)", u.Name, u.NKey)
		}
	case !hasPw:
		return fmt.Errorf("user %q has no password", u.Name)
	}
	return nil
}

// checkRoles checks a user's roles; a plugin's user has none.
func checkRoles(u userEntry) error {
	if u.Plugin != nil && len(u.Roles) > 0 {
		return fmt.Errorf("user %q: a plugin's user has no HTTP roles", u.Name)
	}
	for _, r := range u.Roles {
		if _, ok := roleNames[r]; !ok {
			return fmt.Errorf("user %q: role %q: want read, submit, operate or admin", u.Name, r)
		}
	}
	return nil
}

// userRole is the highest of u's roles; a user without "plugin" and
// without roles is an admin, as every such user was before roles existed.
func userRole(u userEntry) role {
	if u.Plugin != nil {
		return roleNone
	}
	if len(u.Roles) == 0 {
		return roleAdmin
	}
	best := roleNone
	for _, r := range u.Roles {
		best = max(best, roleNames[r])
	}
	return best
}

// natsRights says whether u gets every NATS right: admins only. Lesser
// roles are for HTTP clients, which need no NATS connection.
func natsRights(u userEntry) bool { return userRole(u) == roleAdmin }

// httpUser is what the HTTP API knows of a user.
type httpUser struct {
	password string // plain, or a bcrypt hash
	role     role
}

// httpAuth checks HTTP basic credentials against the users file. It is
// safe for concurrent use.
type httpAuth struct {
	users map[string]httpUser
	// bcrypt costs tens of milliseconds a check: a password once found
	// right is remembered (as its SHA-256) so that a client's every request
	// does not pay it again, and at most two checks run at once so that
	// wrong guesses cannot take every core.
	mu     sync.Mutex
	good   map[string][sha256.Size]byte
	bcrypt chan struct{}
	// dummy is checked for an unknown name: a bcrypt hash when some
	// user's password is one, else a password nobody can give.
	dummy string
}

// parseHTTPUsers reads the HTTP users of a users file that parseUsers has
// accepted. A user with an NKey and no password cannot use HTTP.
func parseHTTPUsers(data []byte) (*httpAuth, error) {
	var f usersFile
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&f); err != nil {
		return nil, describeJSON(data, err)
	}
	a := &httpAuth{users: map[string]httpUser{}, good: map[string][sha256.Size]byte{}, bcrypt: make(chan struct{}, 2), dummy: "\x00"}
	for _, u := range f.Users {
		if r := userRole(u); r != roleNone && u.Password != "" {
			a.users[u.Name] = httpUser{password: u.Password, role: r}
			if strings.HasPrefix(u.Password, "$2") {
				a.dummy = u.Password // of the same cost; !ok refuses it anyway
			}
		}
	}
	return a, nil
}

// errBadCredentials is any failed authentication: which part was wrong is
// not said.
var errBadCredentials = errors.New("bad credentials")

// check returns the role of the user the request authenticates as.
func (a *httpAuth) check(ctx context.Context, name, password string) (role, error) {
	u, ok := a.users[name]
	if !ok {
		// As long as a wrong password of a real user: how long the
		// answer takes does not say which names exist.
		u = httpUser{password: a.dummy}
	}
	if !strings.HasPrefix(u.password, "$2") {
		if subtle.ConstantTimeCompare([]byte(u.password), []byte(password)) != 1 || !ok {
			return roleNone, errBadCredentials
		}
		return u.role, nil
	}
	sum := sha256.Sum256([]byte(password))
	a.mu.Lock()
	known, seen := a.good[name]
	a.mu.Unlock()
	if seen && subtle.ConstantTimeCompare(known[:], sum[:]) == 1 {
		return u.role, nil
	}
	select {
	case a.bcrypt <- struct{}{}:
		defer func() { <-a.bcrypt }()
	case <-ctx.Done():
		return roleNone, context.Cause(ctx)
	}
	if bcrypt.CompareHashAndPassword([]byte(u.password), []byte(password)) != nil || !ok {
		return roleNone, errBadCredentials
	}
	a.mu.Lock()
	a.good[name] = sum
	a.mu.Unlock()
	return u.role, nil
}

// require wraps h so that it answers only a user with role need or more:
// 401 (with a Basic challenge) without credentials or with bad ones, 403
// for a user whose roles fall short. A nil a (no --users) lets everyone in.
func (a *httpAuth) require(need role, h http.Handler) http.Handler {
	if a == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, pw, ok := r.BasicAuth()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="qtasks", charset="UTF-8"`)
			http.Error(w, "authentication required: HTTP basic auth with a user of the users file", http.StatusUnauthorized)
			return
		}
		got, err := a.check(r.Context(), name, pw)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="qtasks", charset="UTF-8"`)
			http.Error(w, "authentication failed: "+err.Error(), http.StatusUnauthorized)
			return
		}
		if got < need {
			http.Error(w, fmt.Sprintf("user %s (role %s) may not do this: it needs role %s", name, got, need), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
