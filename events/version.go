package events

import "fmt"

// ProtocolVersion is the version of the wire protocol described by
// docs/PROTOCOL.md. Version 1 is every log written before 2026-12-07 (no
// version was recorded then); version 2 is the first one numbered, and the
// first that a registration states (§8); version 3 lets a phase message
// hold the facts of several task runs (§4.4: a client that submits many
// tasks at once packs their submissions together).
const ProtocolVersion = 3

// CheckProtocol is the one home of the rule by which a registrar accepts a
// plugin's registration by the protocol version it states (PROTOCOL.md
// §16): its own version; and version 2, whose plugins version 3 changes
// nothing for unless they read phase messages, which may now hold the
// facts of several tasks: a version 2 plugin that reads them (readsBatches)
// is refused, so that one which took a phase message for one task's cannot
// misread the log unawares. A registration without a version is of
// version 1. The error says what to change.
func CheckProtocol(version int, readsBatches bool) error {
	switch {
	case version == ProtocolVersion:
		return nil
	case version == 2 && !readsBatches:
		return nil
	case version == 2:
		return fmt.Errorf(`protocol version 2 with "reads_batches": in version %d a phase message may hold the facts of several tasks; read each element by its own "taskid" (docs/PROTOCOL.md §10.1) and register with "protocol": %d (§16.2)`, ProtocolVersion, ProtocolVersion)
	case version == 0:
		return fmt.Errorf(`the registration has no "protocol" field: a protocol version 1 plugin; this registrar speaks version %d (docs/PROTOCOL.md §16.1 and §16.2 list the changes)`, ProtocolVersion)
	default:
		return fmt.Errorf("protocol version %d; this registrar speaks version %d (and 2, for a plugin that reads no phase message)", version, ProtocolVersion)
	}
}
