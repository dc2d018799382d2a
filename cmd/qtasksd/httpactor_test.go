package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// The console's actions record who acted (PROTOCOL.md §12.6: "by"). Before,
// it took the name in any basic-auth header, so on a qtasksd without
// --users, where nobody is authenticated, any client made the log say that
// "alice" paused a queue. Now the log names the authenticated user, and
// without authentication the client's address.
func TestHTTPConsoleActorIsAuthenticated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		users string
		want  func(by string) bool
	}{
		{"open", "", func(by string) bool { return strings.HasPrefix(by, "http:127.0.0.1:") }},
		{"users", `{"users":[{"name":"alice","password":"alice-pw","roles":["operate"]}]}`, func(by string) bool { return by == "alice" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			b := bustest.Open(t, nil)
			app, err := executor.New(b, nil)
			require.NoError(t, err)
			var auth *httpAuth
			if tc.users != "" {
				auth, err = parseHTTPUsers([]byte(tc.users))
				require.NoError(t, err)
			}
			log := slog.New(slog.DiscardHandler)
			c := httpConfig{Auth: auth, Console: newConsole(app, nil, nil, auth, log)}
			srv := httptest.NewServer(newHTTPHandler(app, metricsHandler(newRegistry(), log), c))
			t.Cleanup(srv.Close)

			req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/api/v1/queues/default/pause", strings.NewReader(`{"reason":"r"}`))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			req.SetBasicAuth("alice", "alice-pw")
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, http.StatusOK, resp.StatusCode)

			ops := bustest.Events(t, b, events.SubjectOperator+".>")
			require.Len(t, ops, 1)
			var op events.OperatorAction
			require.NoError(t, json.Unmarshal(ops[0].Event.Data, &op))
			require.True(t, tc.want(op.By), "recorded as done by %q", op.By)
		})
	}
}
