package events

// ProtocolVersion is the version of the wire protocol described by
// docs/PROTOCOL.md. Version 1 is every log written before 2026-12-07 (no
// version was recorded then); version 2 is the first one numbered, and the
// first that a registration states (§8): the registrar refuses a plugin that
// speaks another version, with a reason the plugin sees.
const ProtocolVersion = 2
