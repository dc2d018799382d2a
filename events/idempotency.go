package events

import (
	"errors"
	"fmt"
)

// MaxIdempotencyKeyLen bounds an idempotency key, in bytes. The key is kept
// in the task's record and in the log's submission facts; a 950 KiB key once
// made a task that could not be recorded.
const MaxIdempotencyKeyLen = 256

// ErrInvalidIdempotencyKey is returned by CheckIdempotencyKey.
var ErrInvalidIdempotencyKey = errors.New("invalid idempotency key")

// CheckIdempotencyKey says why key cannot be an idempotency key, or nil:
// 1 to MaxIdempotencyKeyLen bytes of printable ASCII (0x21 to 0x7e: no
// spaces or control characters), so that it fits an HTTP header, a log
// line and a terminal as it is. The empty key means "none" and is not
// checked here.
func CheckIdempotencyKey(key string) error {
	if len(key) > MaxIdempotencyKeyLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidIdempotencyKey, len(key), MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: byte %d is %q; want printable ASCII without spaces", ErrInvalidIdempotencyKey, i+1, c)
		}
	}
	return nil
}
