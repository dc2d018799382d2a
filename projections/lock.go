package projections

import (
	"errors"
	"fmt"

	"github.com/qtasks/qtasks-go/internal/flock"
)

// ErrLocked is returned when another projector holds the database.
var ErrLocked = errors.New("another projector is writing this database")

// lockFile takes the projector's lock on path.
func lockFile(path string) (*flock.Lock, error) {
	l, err := flock.Acquire(path)
	if errors.Is(err, flock.ErrLocked) {
		return nil, fmt.Errorf("%w (%s is locked)", ErrLocked, path)
	}
	return l, err
}
