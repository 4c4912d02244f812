/**
 * Stream ids (PROTOCOL.md section 8.1). The master numbers its commands 0, 1,
 * 2, ... and never reuses a number within a session (a resumed session keeps
 * counting), so a message that crosses a COMPLETE on the wire can only be
 * about the command that just ended: the agent tells "finished" (at or below
 * the highest id it has seen in a START) from "never started", and a REJECT
 * names exactly one command.
 *
 * Ids do not wrap: the output head carries -1 - (2 × stream + channel) in 32
 * bits, so the last id is 2^31 - 1. A master that has used them all starts no
 * new command on that session and ends it (SESSION_EXPIRED) once its running
 * commands are complete; the agent's next session counts from 0 again.
 */
export const MAX_STREAM_ID = 2 ** 31 - 1;
