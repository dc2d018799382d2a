package executor

import (
	"encoding/json"
)

// encoded is a payload already encoded, as json.Marshal would encode it
// (fire takes it as it is): a submission encodes its record once for
// broker_add_before, storage_add, broker_add_after, the record and the
// task message (fireBefore).
type encoded json.RawMessage

// AppendJSON appends the encoding as it is (events.Payload). With no dst
// it returns the encoding itself, uncopied: the submission's record bytes
// are shared by its facts, record and task message, none of which changes
// them.
func (e encoded) AppendJSON(dst []byte) ([]byte, error) {
	if dst == nil {
		return e, nil
	}
	return append(dst, e...), nil
}

// storageAddInput is events.StorageAddPayload{id, t} encoded, built from
// rec, t encoded by encodeRecord: the bytes json.Marshal writes for it
// (TestModelInputIsModelPayload).
func storageAddInput(rec []byte, id string) json.RawMessage {
	q := mustJSON(id)
	b := make([]byte, 0, len(`{"task_status":,"uuid":}`)+len(rec)+len(q))
	b = append(b, `{"task_status":`...)
	b = append(b, rec...)
	b = append(b, `,"uuid":`...)
	b = append(b, q...)
	return append(b, '}')
}
